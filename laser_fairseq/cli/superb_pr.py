"""SUPERB phone recognition (PR) of an upstream, through s3prl's own recipe (docs/superb.md).

    python scripts/superb_pr.py --upstream examples/hubert_pretraining/tiny_progressive_hubert.pt \\
        --data outputs/synthetic_corpus --out outputs/superb/tiny

Writes OUT/result.json (per = test PER as a fraction, valid_per, steps, upstream_sha256, layer_weights; test =
the PER of every tested split). Running the same command again resumes (s3prl's auto_resume); a finished OUT
asked for another --test-splits is only tested on the new ones. --preset full is SUPERB's recipe (100,000
steps); the default miniature preset is 600 steps for CPU (docs/superb.md says what is scaled and why).
"""

import argparse
import logging
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True,
                        help="checkpoint: fairseq HuBERT, unilm WavLM, s3prl format, LASER checkpoint or HF directory")
    parser.add_argument("--data", required=True,
                        help="synthetic corpus (scripts/make_synthetic_corpus.py) or a LibriSpeech root")
    parser.add_argument("--out", required=True, help="run folder (result.json, s3prl's checkpoints)")
    parser.add_argument("--preset", choices=["miniature", "full"], default="miniature",
                        help="miniature (600 steps, CPU) or full (SUPERB: 100,000 steps) (default miniature)")
    parser.add_argument("--steps", type=int, help="step budget (default: the preset's)")
    parser.add_argument("--batch-size", type=int, help="train batch size (default 16, SUPERB's)")
    parser.add_argument("--eval-step", type=int, help="validate every N steps (default: the preset's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the probe (default 0)")
    parser.add_argument("--num-workers", type=int, default=0, help="data loader workers (default 0)")
    parser.add_argument("--test-splits", nargs="+", default=["test"],
                        help="synthetic corpus: the splits the probe is tested on (default test; per = the first)")
    parser.add_argument("--lexicon", nargs="+",
                        help="LibriSpeech only: local lexicon files for s3prl's G2P (librispeech-lexicon-*-g2p.txt)")
    args = parser.parse_args(argv)
    for value, name in ((args.steps, "--steps"), (args.batch_size, "--batch-size"), (args.eval_step, "--eval-step")):
        if value is not None and value < 1:
            parser.error(f"{name} must be >= 1 (got {value})")
    return args


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ..evaluation.superb_pr import SuperbPRError, run_superb_pr

    try:
        result = run_superb_pr(args.upstream, args.data, args.out, args.preset, args.steps, args.batch_size,
                               args.eval_step, args.device, args.seed, args.num_workers, args.lexicon,
                               args.test_splits)
    except SuperbPRError as error:
        sys.exit(f"error: {error}")
    print(f"PER {result['per']:.4f} (valid {result['valid_per']:.4f}) after {result['steps']} steps; "
          f"layer weights {result['layer_weights']}; {os.path.join(args.out, 'result.json')}")


if __name__ == "__main__":
    main()
