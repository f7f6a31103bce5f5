"""Compare pretraining runs (scripts/pretrain_hubert.py outputs) side by side.

    python scripts/compare_pretraining.py --runs outputs/pretrain/tiny_standard outputs/pretrain/tiny_progressive \\
        --out examples/hubert_pretraining/results

Writes comparison.md, comparison.csv and comparison.png to --out: per run the number of updates done, the
pretraining wall time (features, k-means, labels, training), the PNMI of every iteration's targets, the final
model's top-layer input likeness (CKA with log-mel) and every per-layer measure of the final models, next to
a random model of the same shape. Runs that did different numbers of updates are flagged.
"""

import argparse
import logging
import os
import shlex
import sys

from laser_fairseq.cli.errors import exit_on
from laser_fairseq.pretraining.report import load_summary, write_comparison


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True, help="run directories (each with a summary.json)")
    parser.add_argument("--out", required=True, help="output directory for comparison.{md,csv,png}")
    parser.add_argument("--force", action="store_true", help="replace existing comparison files in --out")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)  # importing fairseq sets the root logger to DEBUG
    existing = [name for name in ("comparison.md", "comparison.csv", "comparison.png")
                if os.path.exists(os.path.join(args.out, name))]
    if existing and not args.force:
        sys.exit(f"error: {', '.join(existing)} exist in {args.out}; pass --force to replace them")
    with exit_on(FileNotFoundError, ValueError):
        summaries = [load_summary(run) for run in args.runs]
    command = "python scripts/compare_pretraining.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    for path in write_comparison(args.out, summaries, command).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
