"""Write a small randomly initialised upstream checkpoint in its real original format.

    python scripts/make_tiny_upstream.py --kind hubert --output outputs/demo/tiny_hubert.pt
    python scripts/make_tiny_upstream.py --kind wavlm --output outputs/demo/tiny_wavlm.pt --layers 4 --dim 64
    python scripts/make_tiny_upstream.py --kind hubert --format hf --output outputs/demo/tiny_hubert_hf
    python scripts/make_tiny_upstream.py --like examples/hubert_pretraining/tiny_progressive_hubert.pt \
        --output outputs/abx/random_tiny_hubert.pt

--like FILE: a random model of exactly the shape of a fairseq HuBERT checkpoint (its cfg and label
dictionaries, freshly initialised with --seed), e.g. the untrained baseline of a pretrained model.

HuBERT: fairseq's checkpoint format, built with fairseq's own hubert model / hubert_pretraining task.
WavLM: Microsoft unilm's format ({"cfg", "model"}). Loading either takes the same code path as a released
checkpoint (hubert_base_ls960.pt, WavLM-Base.pt). --format hf: a Hugging Face transformers directory
(HubertModel / WavLMModel save_pretrained + preprocessor_config.json), like one downloaded from the Hub.
"""

import argparse
import os
import sys

from laser_fairseq.tiny_upstream import (
    make_tiny_hubert,
    make_tiny_wavlm,
    save_checkpoint,
    save_tiny_hf_directory,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["hubert", "wavlm"], help="upstream architecture (required without --like)")
    parser.add_argument("--like", help="a fairseq HuBERT checkpoint: write a random model of its shape instead")
    parser.add_argument("--output", required=True, help="checkpoint file to write (a directory for --format hf)")
    parser.add_argument(
        "--format", choices=["original", "hf"], default="original",
        help="original: fairseq (HuBERT) / unilm (WavLM) file (default); hf: Hugging Face transformers directory",
    )
    parser.add_argument("--layers", type=int, default=4, help="transformer blocks (default 4)")
    parser.add_argument("--dim", type=int, default=64, help="embedding size, a multiple of 4 (default 64)")
    parser.add_argument(
        "--pre-ln", action="store_true",
        help="Large-style: pre-LN blocks, layer-norm CNN, waveform normalisation (default: Base-style)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file or directory")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.like:
        return write_like(args)
    if args.kind is None:
        sys.exit("error: --kind hubert|wavlm is required (or --like CHECKPOINT)")
    if args.layers < 1 or args.dim < 4 or args.dim % 4:
        sys.exit(f"error: --layers must be >= 1 and --dim a positive multiple of 4 (got {args.layers}, {args.dim})")
    if args.format == "hf":
        return write_hf(args)
    make = make_tiny_hubert if args.kind == "hubert" else make_tiny_wavlm
    state = make(layers=args.layers, dim=args.dim, layer_norm_first=args.pre_ln, seed=args.seed)
    try:
        save_checkpoint(state, args.output, force=args.force)
    except FileExistsError as error:
        sys.exit(f"error: {error}")
    count = sum(t.numel() for t in state["model"].values())
    print(f"wrote {args.kind} checkpoint {args.output}: {args.layers} blocks, dim {args.dim}, {count:,} parameters")


def write_like(args):
    from laser_fairseq.checkpoint_io import CheckpointError, load_checkpoint
    from laser_fairseq.pretraining.layer_analysis import write_random_model

    if args.format != "original":
        sys.exit("error: --like writes a fairseq checkpoint; drop --format hf")
    if os.path.exists(args.output) and not args.force:
        sys.exit(f"error: {args.output} exists; pass --force to replace it")
    try:
        reference = load_checkpoint(args.like)
        if not isinstance(reference.get("task_state"), dict) or "dictionaries" not in reference["task_state"]:
            raise CheckpointError(f"{args.like}: not a fairseq HuBERT checkpoint (no task_state.dictionaries)")
        write_random_model(args.like, args.seed, args.output)
    except (CheckpointError, FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    print(f"wrote a random hubert checkpoint {args.output} shaped like {args.like} (seed {args.seed})")


def write_hf(args):
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        save_tiny_hf_directory(args.output, args.kind, args.layers, args.dim, args.pre_ln, args.seed, args.force)
    except FileExistsError as error:
        sys.exit(f"error: {error}")
    print(f"wrote {args.kind} Hugging Face directory {args.output}: {args.layers} blocks, dim {args.dim}")


if __name__ == "__main__":
    main()
