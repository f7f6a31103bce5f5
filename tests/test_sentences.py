"""laser_fairseq.data.sentences: every template's output parsed by a grammar written here from the word lists,
the draw's statistics, distinctness, ids, and the grammar's output pinned to its GRAMMAR_VERSION.

All in process and fast (no synthesis): these are the tests `make mutate MUTATE_SCOPE=corpus` runs.
"""

import hashlib
import random
import re
from collections import Counter

import pytest

from laser_fairseq.data import sentences as grammar
from laser_fairseq.data.sentences import Sentence, SentenceError, draw_sentences, plural, transcript, with_article
from laser_fairseq.data.word_lists import (
    ADJECTIVES,
    ADVERBS,
    GRAMMAR_VERSION,
    INTRANSITIVE_VERBS,
    NAMES,
    NOUNS,
    PLACES,
    PREPOSITIONS,
    TRANSITIVE_VERBS,
)

# sha256 of "\n".join(texts of draw_sentences(400, seed=1)); corpora record GRAMMAR_VERSION in corpus.json, so
# the same version must mean the same sentences. After a deliberate change of the grammar or the word lists,
# bump GRAMMAR_VERSION in word_lists.py and put the new digest here.
PINNED = {1: "1fbd3991994f77189501fbb59cfbeac2c7a582065b43fbc7add353fa54f10926"}


def one_of(words):
    return "(?:" + "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True)) + ")"


ADJ, NOUN, NAME, ADV = one_of(ADJECTIVES), one_of(NOUNS), one_of(NAMES), one_of(ADVERBS)
NOUNS_PLURAL = one_of(
    [noun + "es" for noun in NOUNS if noun[-1] in "sx" or noun[-2:] in ("ch", "sh")]
    + [noun[:-1] + "ies" for noun in NOUNS if noun[-1] == "y" and noun[-2] not in "aeiou"]
    + [noun + "s" for noun in NOUNS if not (noun[-1] in "sxy" or noun[-2:] in ("ch", "sh"))]
    + [noun + "s" for noun in NOUNS if noun[-1] == "y" and noun[-2] in "aeiou"]
)
BASE, PAST = one_of([base for base, _ in TRANSITIVE_VERBS]), one_of([past for _, past in TRANSITIVE_VERBS])
INTRANSITIVE_PAST = one_of([past for _, past in INTRANSITIVE_VERBS])
NOUN_PHRASE = f"(?:the|a|an) (?:{ADJ} )?{NOUN}"
SUBJECT = f"(?:{NAME}|{NOUN_PHRASE})"
PLACE = f"{one_of(PREPOSITIONS)} the {one_of(PLACES)}"
PLURAL_PHRASE = f"(?:the|some|many|two|three|several) {ADJ} {NOUNS_PLURAL}"
# the shape of each template's output, before random_sentence capitalises the first letter
SHAPES = {
    "transitive": f"{SUBJECT} {PAST} {NOUN_PHRASE}\\.",
    "transitive_place": f"{SUBJECT} {PAST} {NOUN_PHRASE} {PLACE}\\.",
    "intransitive_place": f"{SUBJECT} {INTRANSITIVE_PAST} {ADV} {PLACE}\\.",
    "plural": f"{PLURAL_PHRASE} {INTRANSITIVE_PAST} {PLACE}\\.",
    "pair": f"({NAME}) and ({NAME}) {INTRANSITIVE_PAST} {ADV}\\.",
    "question": f"Did {SUBJECT} {BASE} {NOUN_PHRASE}\\?",
    "why_question": f"Why did {NAME} {BASE} {PLURAL_PHRASE}\\?",
}


def articles_agree(text):
    """'an' before a vowel letter a/e/i/o, 'a' before anything else (the word lists' rule)."""
    words = text.lower().split()
    return all((word == "an") == (following[0] in "aeio") for word, following in zip(words, words[1:])
               if word in ("a", "an"))


class FixedDraws(random.Random):
    """A Random whose random() returns ``value``: picks one branch of a probability."""

    def __init__(self, value):
        super().__init__(0)
        self.value = value

    def random(self):
        return self.value


def test_every_template_gives_its_shape_and_the_article_rule():
    assert sorted(grammar.TEMPLATES) == sorted(SHAPES)
    rng = random.Random(5)
    for name, template in grammar.TEMPLATES.items():
        for _ in range(300):
            text = template(rng)
            assert re.fullmatch(SHAPES[name], text), (name, text)
            assert articles_agree(text), text


def test_a_pair_names_two_different_people():
    rng = random.Random(2)
    for _ in range(300):
        first, second = re.fullmatch(SHAPES["pair"], grammar.TEMPLATES["pair"](rng)).groups()
        assert first != second


def test_random_sentence_capitalises_and_draws_templates_uniformly():
    rng, counts = random.Random(7), Counter()
    for _ in range(7_000):
        text = grammar.random_sentence(rng)
        assert text[0].isupper()
        lowered = text[0].lower() + text[1:]
        shapes = [name for name, shape in SHAPES.items() if re.fullmatch(shape, lowered) or re.fullmatch(shape, text)]
        assert len(shapes) >= 1, text
        counts[shapes[0]] += 1
    assert set(counts) == set(SHAPES) and all(800 <= count <= 1_200 for count in counts.values()), counts


def test_phrase_probabilities():
    rng = random.Random(3)
    phrases = [grammar._noun_phrase(rng) for _ in range(4_000)]
    with_adjective = sum(len(phrase.split()) == 3 for phrase in phrases) / len(phrases)
    definite = sum(phrase.startswith("the ") for phrase in phrases) / len(phrases)
    subjects = [grammar._subject(rng) for _ in range(4_000)]
    named = sum(subject in NAMES for subject in subjects) / len(subjects)
    assert abs(with_adjective - 0.6) < 0.03 and abs(definite - 0.5) < 0.03 and abs(named - 0.3) < 0.03
    quantities = Counter(grammar._plural_phrase(rng).split()[0] for _ in range(3_000))
    assert set(quantities) == {"the", "some", "many", "two", "three", "several"}


def test_every_word_of_the_lists_is_used():
    rng = random.Random(11)
    words = Counter(word for _ in range(20_000) for word in re.findall(r"[A-Za-z]+", grammar.random_sentence(rng)))
    for listed in (ADJECTIVES, NOUNS, PLACES, NAMES, ADVERBS, PREPOSITIONS):
        assert all(word in words for word in listed)
    for pairs in (TRANSITIVE_VERBS, INTRANSITIVE_VERBS):
        assert all(past in words for _, past in pairs)
    assert all(base in words for base, _ in TRANSITIVE_VERBS)


def test_probability_boundaries():
    """A draw equal to the probability takes the less likely branch (``random() < p``)."""
    assert len(grammar._noun_phrase(FixedDraws(0.6)).split()) == 2  # no adjective
    assert len(grammar._noun_phrase(FixedDraws(0.59)).split()) == 3
    assert grammar._subject(FixedDraws(0.3)) not in NAMES and grammar._subject(FixedDraws(0.29)) in NAMES


def test_plural_rules():
    expected = {
        "fox": "foxes", "bus": "buses", "church": "churches", "dish": "dishes", "cherry": "cherries",
        "city": "cities", "donkey": "donkeys", "boy": "boys", "guy": "guys", "day": "days", "cat": "cats",
        "zebra": "zebras", "tray": "trays", "toy": "toys",
    }
    assert {noun: plural(noun) for noun in expected} == expected


def test_articles_by_spelling():
    assert with_article(FixedDraws(0.9), "apple") == "an apple"
    assert with_article(FixedDraws(0.9), "otter") == "an otter"
    assert with_article(FixedDraws(0.9), "eagle") == "an eagle"
    assert with_article(FixedDraws(0.9), "island") == "an island"
    assert with_article(FixedDraws(0.9), "brave otter") == "a brave otter"
    assert with_article(FixedDraws(0.9), "zebra") == "a zebra"
    assert with_article(FixedDraws(0.5), "otter") == "an otter"  # 0.5 is not below 0.5
    assert with_article(FixedDraws(0.49), "otter") == "the otter"


def test_transcripts_are_upper_case_words_with_apostrophes_kept():
    assert transcript("Did Ivy nap?") == "DID IVY NAP"
    assert transcript("  Don't stop,Ivy!  ") == "DON'T STOP IVY"
    assert transcript("Alice and Amos  laughed.") == "ALICE AND AMOS LAUGHED"
    assert Sentence("s0001", "The quiet fox ran.").words == "THE QUIET FOX RAN"


def test_sentences_are_distinct_reproducible_and_numbered():
    sentences = draw_sentences(3_000, 11)
    assert len({s.words for s in sentences}) == 3_000
    assert [s.text for s in draw_sentences(50, 11)] == [s.text for s in sentences[:50]]
    assert [s.text for s in draw_sentences(50, 12)] != [s.text for s in sentences[:50]]
    assert all(4 <= len(s.words.split()) <= 12 and s.text[-1] in ".?" for s in sentences)
    assert [s.sentence_id for s in sentences[:3]] == ["s0001", "s0002", "s0003"]
    assert sentences[-1].sentence_id == "s3000"
    assert [s.sentence_id for s in draw_sentences(1, 11)] == ["s0001"]
    many = draw_sentences(10_000, 11)
    assert (many[0].sentence_id, many[-1].sentence_id) == ("s00001", "s10000")


def test_the_first_text_of_a_transcript_is_kept(monkeypatch):
    texts = iter(["Ivy ran.", "Ivy ran?", "Leo sat.", "Leo sat!"])
    monkeypatch.setattr(grammar, "random_sentence", lambda rng: next(texts))
    assert [(s.sentence_id, s.text) for s in draw_sentences(2, 1)] == [("s0001", "Ivy ran."), ("s0002", "Leo sat.")]


def test_a_draw_that_cannot_be_met_stops_after_its_attempt_budget(monkeypatch):
    calls = []
    monkeypatch.setattr(grammar, "random_sentence", lambda rng: calls.append(1) or f"Word {'abc'[len(calls) % 3]}.")
    with pytest.raises(SentenceError, match=r"drew only 3 distinct sentences in 1101 attempts \(asked for 5\)"):
        draw_sentences(5, 1)
    assert len(calls) == 20 * 5 + 1000
    with pytest.raises(SentenceError, match="need at least 1 sentence, asked for 0"):
        draw_sentences(0, 1)


def test_the_grammar_output_is_pinned_to_its_version():
    texts = "\n".join(s.text for s in draw_sentences(400, 1))
    digest = hashlib.sha256(texts.encode()).hexdigest()
    assert GRAMMAR_VERSION in PINNED, f"GRAMMAR_VERSION {GRAMMAR_VERSION} has no pinned digest; add {digest!r}"
    assert digest == PINNED[GRAMMAR_VERSION], (
        "the sentences of GRAMMAR_VERSION changed: corpora made before would no longer match their recorded version; "
        f"bump GRAMMAR_VERSION in laser_fairseq/data/word_lists.py and pin {digest!r}"
    )
