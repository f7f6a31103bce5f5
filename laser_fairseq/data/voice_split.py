"""A held-out-voice split of a synthetic corpus: lines of some voices of another corpus' split, checked to be
unseen by the destination's train split (voices and sentence texts) and scorable by its phone dictionary.

``laser-make-voice-split`` (laser_fairseq/cli/make_voice_split.py) is its front door; docs/synthetic_corpus.md
says when to use it.
"""

import os
from typing import Dict, List

from laser_fairseq.files import write_texts

SIDE_FILES = ("sent", "voice", "phn", "phones", "wrd", "ltr")


class VoiceSplitError(ValueError):
    """A split that cannot be made; the message names the file and line."""


def read_lines(path: str) -> List[str]:
    if not os.path.isfile(path):
        raise VoiceSplitError(f"{path}: not found; is this a corpus made by scripts/make_synthetic_corpus.py?")
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def sentence_texts(corpus: str) -> Dict[str, str]:
    """sentence id -> text, from corpus/sentences.tsv."""
    rows = read_lines(os.path.join(corpus, "sentences.tsv"))[1:]
    return {row.split("\t")[0]: row.split("\t")[2] for row in rows}


def phone_symbols(corpus: str) -> set:
    return {line.split()[0] for line in read_lines(os.path.join(corpus, "dict.phn.txt")) if line.strip()}


def select_lines(source: str, split: str, voices: List[str]) -> List[int]:
    """Indices of SOURCE/<split> audio lines spoken by ``voices``."""
    voice_path = os.path.join(source, f"{split}.voice")
    spoken = read_lines(voice_path)
    unknown = sorted(set(voices) - set(spoken))
    if unknown:
        raise VoiceSplitError(f"{voice_path}: no line has voice {', '.join(unknown)} (voices there: "
                              f"{', '.join(sorted(set(spoken)))})")
    return [index for index, voice in enumerate(spoken) if voice in voices]


def check_held_out(source: str, split: str, dest: str, selected: List[int]):
    """The selected lines' voices and sentences are not in DEST's train split; their phones are in its dict."""
    train_voices = set(read_lines(os.path.join(dest, "train.voice")))
    voices = read_lines(os.path.join(source, f"{split}.voice"))
    seen = sorted({voices[i] for i in selected} & train_voices)
    if seen:
        raise VoiceSplitError(f"{os.path.join(dest, 'train.voice')}: DEST's train split already has voice(s) "
                              f"{', '.join(seen)}; choose voices it does not have")
    source_texts, dest_texts = sentence_texts(source), sentence_texts(dest)
    train_texts = {dest_texts[s] for s in read_lines(os.path.join(dest, "train.sent"))}
    sentences = read_lines(os.path.join(source, f"{split}.sent"))
    for index in selected:
        if source_texts[sentences[index]] in train_texts:
            raise VoiceSplitError(f"{os.path.join(source, split + '.sent')}:{index + 1}: sentence "
                                  f"{source_texts[sentences[index]]!r} is in DEST's train split; make SOURCE with "
                                  f"DEST's --sentences and --seed so the splits match")
    known = phone_symbols(dest)
    labels = read_lines(os.path.join(source, f"{split}.phn"))
    for index in selected:
        missing = sorted(set(labels[index].split()) - known)
        if missing:
            raise VoiceSplitError(f"{os.path.join(source, split + '.phn')}:{index + 1}: phone(s) {', '.join(missing)} "
                                  f"not in {os.path.join(dest, 'dict.phn.txt')}; the phone probe could not score them")


def write_split(source: str, split: str, dest: str, name: str, selected: List[int]):
    """DEST/<name>.tsv (root: SOURCE's audio root, absolute) and its side files, written after all checks."""
    manifest = read_lines(os.path.join(source, f"{split}.tsv"))
    root = manifest[0].strip()
    root = root if os.path.isabs(root) else os.path.abspath(os.path.join(source, root))
    outputs = {"tsv": [root] + [manifest[1 + i] for i in selected]}
    for extension in SIDE_FILES:
        lines = read_lines(os.path.join(source, f"{split}.{extension}"))
        outputs[extension] = [lines[i] for i in selected]
    write_texts({os.path.join(dest, f"{name}.{extension}"): "\n".join(lines) + "\n"
                 for extension, lines in outputs.items()})


def make_voice_split(source: str, split: str, voices: List[str], dest: str, name: str, force: bool = False) -> int:
    """Write DEST/<name>.* from SOURCE/<split> lines of ``voices``; returns the number of utterances."""
    if name == "train":
        raise VoiceSplitError("--name train would replace the training split; choose another name")
    target = os.path.join(dest, f"{name}.tsv")
    if os.path.exists(target) and not force:
        raise VoiceSplitError(f"{target} exists; pass --force to replace it")
    selected = select_lines(source, split, voices)
    check_held_out(source, split, dest, selected)
    write_split(source, split, dest, name, selected)
    return len(selected)
