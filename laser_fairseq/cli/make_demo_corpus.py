"""Deprecated: the demo corpus is the preset "demo" of the synthetic corpus tool. Use

    python scripts/make_synthetic_corpus.py --preset demo --out manifests/demo --force

This front door keeps the old flags (--out-dir, default manifests/demo; --valid-sentences; --force) and runs
exactly that, after a deprecation warning.
"""

import argparse
import dataclasses
import os
import sys
import warnings

from laser_fairseq.cli import make_synthetic_corpus
from laser_fairseq.data.demo_corpus import DEMO_PRESET
from laser_fairseq.data.synthetic_corpus import CorpusError
from laser_fairseq.demo import DEMO_MANIFESTS

DEPRECATION = ("scripts/make_demo_corpus.py is deprecated: run `python scripts/make_synthetic_corpus.py --preset demo "
               "--out manifests/demo --force` (laser-make-synthetic-corpus) instead")


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
    warnings.warn(DEPRECATION, DeprecationWarning, stacklevel=2)
    try:  # 0 would mean "the preset's default" to make_synthetic_corpus; for the demo it is an error
        dataclasses.replace(DEMO_PRESET, valid_sentences=args.valid_sentences).splits()
    except CorpusError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return make_synthetic_corpus.main(
        ["--preset", DEMO_PRESET.name, "--out", args.out_dir, "--valid-sentences", str(args.valid_sentences),
         "--workers", str(args.workers)] + (["--force"] if args.force else []))


if __name__ == "__main__":
    sys.exit(main())
