"""The CPU demo behind `make demo`: a real LASER run on a pretrained tiny HuBERT, start to finish.

Makes (or reuses) the synthetic demo corpus in outputs/demo/corpus, fine-tunes the top 2 blocks with
fairseq-hydra-train and examples/laser/config/demo.yaml, prints the losses, then analyses every layer before vs
after on the held-out test sentences (laser_fairseq/demo.py; docs/demo.md). Every run writes a new
outputs/demo/run-<timestamp> (or --run-dir); nothing is overwritten.

    python scripts/run_demo.py [--upstream CKPT | --upstream random --kind hubert|wavlm] [--max-update 100]
        [--corpus DIR] [--run-dir DIR] [--skip-analysis]
"""

import argparse
import sys

from laser_fairseq.demo import CORPUS_SETTINGS, DEMO_CORPUS, PRETRAINED_UPSTREAM, DemoError, run_demo


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default=PRETRAINED_UPSTREAM,
                        help="original HuBERT/WavLM checkpoint, or 'random' for a tiny random one made on the fly "
                             "(default: the committed tiny HuBERT pretrained on synthetic speech)")
    parser.add_argument("--kind", choices=["hubert", "wavlm"], default="hubert",
                        help="with --upstream random: which tiny upstream to build")
    parser.add_argument("--corpus", default=DEMO_CORPUS,
                        help="corpus folder (train/valid/test.tsv with .phn labels); made there when missing "
                             f"(default outputs/demo/corpus, {CORPUS_SETTINGS})")
    parser.add_argument("--max-update", type=int, default=100, help="LASER updates (default 100)")
    parser.add_argument("--run-dir", help="output folder (default: outputs/demo/run-<timestamp>); must not exist")
    parser.add_argument("--skip-analysis", action="store_true", help="stop after training and the summary")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        run_demo(upstream=args.upstream, kind=args.kind, corpus=args.corpus, max_update=args.max_update,
                 run_dir=args.run_dir, skip_analysis=args.skip_analysis)
    except DemoError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
