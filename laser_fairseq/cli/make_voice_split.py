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

from laser_fairseq.cli.errors import exit_on
from laser_fairseq.data.voice_split import VoiceSplitError, make_voice_split


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


def main(argv=None):
    args = parse_args(argv)
    with exit_on(VoiceSplitError):
        count = make_voice_split(args.source, args.split, args.voices, args.dest, args.name, args.force)
    print(f"wrote {os.path.join(args.dest, args.name)}.tsv: {count} utterances of voice(s) {', '.join(args.voices)} "
          f"from {os.path.join(args.source, args.split)}.tsv")


if __name__ == "__main__":
    main()
