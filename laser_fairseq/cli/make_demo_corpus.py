"""Synthesise the demo speech corpus committed in manifests/demo: the demo preset of the synthetic corpus tool.

    python scripts/make_demo_corpus.py --force          (or: laser-make-demo-corpus --force)

16 sentences x 5 espeak-ng voices (libespeak-ng from the espeakng-loader wheel), 16 kHz FLAC in audio/, fairseq
manifests train.tsv / valid.tsv rooted at "audio" (relative to their folder), .wrd .ltr .sent .voice side
files, dict.ltr.txt, voices.tsv and README.md; split by sentence (valid: the last --valid-sentences).
See laser_fairseq/data/demo_corpus.py and docs/synthetic_corpus.md.
"""

import argparse
import dataclasses
import os
import sys

from laser_fairseq.data.demo_corpus import DEMO_PRESET
from laser_fairseq.data.synthesis import EspeakError
from laser_fairseq.data.synthetic_corpus import CorpusError, build_preset
from laser_fairseq.demo import DEMO_MANIFESTS



def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=DEMO_MANIFESTS,
                        help="output folder (default: manifests/demo in the repository)")
    parser.add_argument("--valid-sentences", type=int, default=DEMO_PRESET.valid_sentences,
                        help="how many sentence ids (the last ones) form the validation split; all their voices go "
                             f"to valid (default: {DEMO_PRESET.valid_sentences})")
    parser.add_argument("--force", action="store_true", help="overwrite an existing corpus in --out-dir")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="synthesis processes (default: 2, or 1 on a single core); the output does not depend on it")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.workers < 1:
        print(f"error: --workers must be at least 1, got {args.workers}", file=sys.stderr)
        return 1
    preset = dataclasses.replace(DEMO_PRESET, valid_sentences=args.valid_sentences)
    try:
        result = build_preset(args.out_dir, preset, workers=args.workers, force=args.force)
    except (CorpusError, EspeakError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {result.utterances} utterances of the demo corpus to {result.out} in {result.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
