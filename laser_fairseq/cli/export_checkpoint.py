"""Export a LASER training checkpoint as an upstream checkpoint in its original format.

    python scripts/export_checkpoint.py --checkpoint outputs/demo/checkpoints/checkpoint_last.pt \
        --output outputs/demo/laser_hubert.pt

    python scripts/export_checkpoint.py --checkpoint outputs/demo/checkpoints/checkpoint_last.pt \
        --output outputs/demo/laser_hubert_hf --format hf

The trained top blocks are merged into the original upstream (cfg.model.upstream_path of the LASER run, or
--upstream), the projection head is dropped, and the result is written by default in the upstream's own
format: fairseq or s3prl's converted format (HuBERT), unilm (WavLM), or a Hugging Face transformers directory
(a run started from one). --format hf writes such a directory from any upstream. The output is read back and
checked tensor by tensor (an hf directory also by transformers itself, hidden states of every layer) before
success is reported. See docs/export.md, docs/huggingface.md and docs/checkpoints.md.

--format hf also writes a model card, README.md in the directory: the base model (--base-model, its Hub id),
the LASER settings and updates read from the checkpoint, the sha256 of the checkpoint, the upstream and the
weights, the measured effect of a study (--effect-results, a results.json of scripts/evaluate_laser.py),
the license (--license; unknown unless given) and the LASER paper's citation.
"""

import argparse
import os
import sys

from ..checkpoint_io import CheckpointError
from ..export import ALL_FORMATS, CardOptions, export_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="LASER training checkpoint (checkpoint_last.pt)")
    parser.add_argument("--output", required=True, help="file to write (a directory for --format hf)")
    parser.add_argument(
        "--format", choices=list(ALL_FORMATS), default=None,
        help="output format (default: the upstream's own): fairseq or s3prl for HuBERT, unilm for WavLM, hf "
             "(Hugging Face transformers directory) for both",
    )
    parser.add_argument(
        "--upstream", default=None,
        help="the original upstream the LASER run started from, a file or a Hugging Face directory (default: the "
             "path recorded in the "
             "LASER checkpoint, cfg.model.upstream_path)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace an existing output file or directory (never an input)"
    )
    parser.add_argument("--base-model", default=None, metavar="HUB_ID",
                        help="model card (--format hf): the Hub id of the upstream, e.g. facebook/hubert-base-ls960")
    parser.add_argument("--license", default=None, metavar="ID",
                        help="model card (--format hf): the Hub license id of the export, e.g. mit (default: "
                             "unknown, said so in the card; the base model's terms apply)")
    parser.add_argument("--effect-results", default=None, metavar="FILE",
                        help="model card (--format hf): a study's results.json (scripts/evaluate_laser.py) whose "
                             "measured effect the card reports")
    parser.add_argument(
        "--extra-safe-globals", nargs="*", default=[], metavar="module.Class",
        help="extra classes the checkpoints may unpickle under weights-only loading; only for files you trust",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' load/save bars, for --format hf
    try:
        report = export_checkpoint(
            args.checkpoint, args.output, fmt=args.format, upstream=args.upstream, force=args.force,
            extra_safe_globals=args.extra_safe_globals,
            card=CardOptions(base_model=args.base_model, license=args.license, effect_results=args.effect_results),
        )
    except CheckpointError as error:
        sys.exit(f"error: {error}")
    print(report.summary())


if __name__ == "__main__":
    main()
