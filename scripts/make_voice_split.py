#!/usr/bin/env python
"""Add a held-out-voice split to a synthetic corpus: one split of another corpus, only some of its voices.

    python scripts/make_synthetic_corpus.py --out outputs/synthetic_corpus_12v --sentences 250 --voices 12 --seed 1
    python scripts/make_voice_split.py --source outputs/synthetic_corpus_12v --split test \\
        --voices v09 v10 v11 v12 --dest outputs/synthetic_corpus --name test_unseen_voices

The corpus generator speaks every sentence in every voice, so a model trained on DEST/train.tsv has heard
all of DEST's voices. With the same --sentences and --seed and more --voices, the generator draws the same
sentences and splits; this script takes SOURCE/<split> lines of voices DEST never had and writes them into
DEST as a new split <name>.tsv (audio root: SOURCE's audio folder) with its .sent .voice .phn .phones .wrd
.ltr side files, so scripts/analyze_layers.py and scripts/evaluate_laser.py (--eval-split NAME) can measure
on unseen sentences *and* unseen voices, with the phone probe trained on DEST/train.

Refused (nothing written), with the file and line: a voice DEST's train split has, a sentence (by text) in
DEST's train split, a phone DEST's dict.phn.txt lacks, an existing <name>.tsv without --force.
"""

import argparse
import os
import sys
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SIDE_FILES = ("sent", "voice", "phn", "phones", "wrd", "ltr")


class VoiceSplitError(ValueError):
    """A split that cannot be made; the message names the file and line."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, help="corpus with the extra voices (make_synthetic_corpus.py)")
    parser.add_argument("--split", default="test", help="split of SOURCE to take lines from (default test)")
    parser.add_argument("--voices", nargs="+", required=True, help="voice ids to keep (see SOURCE/voices.tsv)")
    parser.add_argument("--dest", required=True, help="corpus to add the split to (its train split is the one "
                                                      "that must not have the voices or the sentences)")
    parser.add_argument("--name", required=True, help="name of the new split in DEST, e.g. test_unseen_voices")
    parser.add_argument("--force", action="store_true", help="replace an existing split of that name")
    return parser.parse_args(argv)


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
    for extension, lines in outputs.items():
        path = os.path.join(dest, f"{name}.{extension}")
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)


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


def main(argv=None):
    args = parse_args(argv)
    try:
        count = make_voice_split(args.source, args.split, args.voices, args.dest, args.name, args.force)
    except VoiceSplitError as error:
        sys.exit(f"error: {error}")
    print(f"wrote {os.path.join(args.dest, args.name)}.tsv: {count} utterances of voice(s) {', '.join(args.voices)} "
          f"from {os.path.join(args.source, args.split)}.tsv")


if __name__ == "__main__":
    main()
