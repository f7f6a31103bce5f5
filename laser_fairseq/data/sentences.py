"""Distinct English sentences from a small committed grammar, for synthetic speech corpora.

Why a grammar: it needs no download or extra package, gives millions of distinct, grammatical sentences of
4-10 common words (1.5-4 s of speech), and its vocabulary (``word_lists.py``) is known to read well with
espeak-ng — no digits, abbreviations or context-dependent readings, so the transcript is what is spoken.

A seed fixes the sentences (Python's ``random.Random``); two sentences count as the same when their
transcripts (``transcript``: upper-case words, punctuation dropped) are equal, so "Did X go?" and "Did X go."
can never land in different splits.
"""

import random
from dataclasses import dataclass
from typing import Callable, Dict, List

from .word_lists import (
    ADJECTIVES,
    ADVERBS,
    INTRANSITIVE_VERBS,
    NAMES,
    NOUNS,
    PLACES,
    PREPOSITIONS,
    TRANSITIVE_VERBS,
)


class SentenceError(ValueError):
    """Sentences that cannot be drawn as asked; the message says what to change."""


@dataclass(frozen=True)
class Sentence:
    sentence_id: str  # e.g. "s0042"
    text: str  # what is synthesised, e.g. "The quiet fox found a lantern."

    @property
    def words(self) -> str:
        return transcript(self.text)


def transcript(text: str) -> str:
    """LibriSpeech-style words: ``"Did Ivy nap?"`` -> ``"DID IVY NAP"``."""
    kept = "".join(ch if ch.isalpha() or ch == "'" else " " for ch in text.upper())
    return " ".join(kept.split())


def plural(noun: str) -> str:
    """Regular English plural (the word lists hold only nouns that take one)."""
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def with_article(rng: random.Random, phrase: str) -> str:
    """``phrase`` after "the" or "a"/"an" (chosen by spelling, which the word lists keep reliable)."""
    if rng.random() < 0.5:
        return f"the {phrase}"
    return f"{'an' if phrase[0] in 'aeio' else 'a'} {phrase}"


def _noun_phrase(rng: random.Random) -> str:
    phrase = rng.choice(NOUNS)
    if rng.random() < 0.6:
        phrase = f"{rng.choice(ADJECTIVES)} {phrase}"
    return with_article(rng, phrase)


def _plural_phrase(rng: random.Random) -> str:
    quantity = rng.choice(("the", "some", "many", "two", "three", "several"))
    return f"{quantity} {rng.choice(ADJECTIVES)} {plural(rng.choice(NOUNS))}"


def _subject(rng: random.Random) -> str:
    return rng.choice(NAMES) if rng.random() < 0.3 else _noun_phrase(rng)


def _place(rng: random.Random) -> str:
    return f"{rng.choice(PREPOSITIONS)} the {rng.choice(PLACES)}"


def _statement_transitive(rng: random.Random) -> str:
    return f"{_subject(rng)} {rng.choice(TRANSITIVE_VERBS)[1]} {_noun_phrase(rng)}."


def _statement_with_place(rng: random.Random) -> str:
    return f"{_subject(rng)} {rng.choice(TRANSITIVE_VERBS)[1]} {_noun_phrase(rng)} {_place(rng)}."


def _statement_intransitive(rng: random.Random) -> str:
    return f"{_subject(rng)} {rng.choice(INTRANSITIVE_VERBS)[1]} {rng.choice(ADVERBS)} {_place(rng)}."


def _statement_plural(rng: random.Random) -> str:
    return f"{_plural_phrase(rng)} {rng.choice(INTRANSITIVE_VERBS)[1]} {_place(rng)}."


def _statement_pair(rng: random.Random) -> str:
    first, second = rng.sample(NAMES, 2)
    return f"{first} and {second} {rng.choice(INTRANSITIVE_VERBS)[1]} {rng.choice(ADVERBS)}."


def _question(rng: random.Random) -> str:
    return f"Did {_subject(rng)} {rng.choice(TRANSITIVE_VERBS)[0]} {_noun_phrase(rng)}?"


def _why_question(rng: random.Random) -> str:
    return f"Why did {rng.choice(NAMES)} {rng.choice(TRANSITIVE_VERBS)[0]} {_plural_phrase(rng)}?"


TEMPLATES: Dict[str, Callable[[random.Random], str]] = {
    "transitive": _statement_transitive,
    "transitive_place": _statement_with_place,
    "intransitive_place": _statement_intransitive,
    "plural": _statement_plural,
    "pair": _statement_pair,
    "question": _question,
    "why_question": _why_question,
}


def random_sentence(rng: random.Random) -> str:
    """One sentence from a template chosen uniformly, first letter capitalised."""
    text = TEMPLATES[rng.choice(sorted(TEMPLATES))](rng)
    return text[0].upper() + text[1:]


def draw_sentences(count: int, seed: int) -> List[Sentence]:
    """``count`` sentences with pairwise different transcripts, ids ``s0001``..., the same for the same seed."""
    if count < 1:
        raise SentenceError(f"need at least 1 sentence, asked for {count}")
    rng = random.Random(seed)
    texts: Dict[str, str] = {}
    attempts = 0
    while len(texts) < count:
        attempts += 1
        if attempts > 20 * count + 1000:
            raise SentenceError(
                f"drew only {len(texts)} distinct sentences in {attempts} attempts (asked for {count}); "
                f"ask for fewer sentences or extend laser_fairseq/data/word_lists.py"
            )
        text = random_sentence(rng)
        texts.setdefault(transcript(text), text)
    width = max(4, len(str(count)))
    return [Sentence(f"s{index:0{width}d}", text) for index, text in enumerate(texts.values(), start=1)]
