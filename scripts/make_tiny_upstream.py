#!/usr/bin/env python
"""Write a small randomly initialised upstream checkpoint in its real original format.

    python scripts/make_tiny_upstream.py --kind hubert --output outputs/demo/tiny_hubert.pt
    python scripts/make_tiny_upstream.py --kind wavlm --output outputs/demo/tiny_wavlm.pt --layers 4 --dim 64
    python scripts/make_tiny_upstream.py --kind hubert --format hf --output outputs/demo/tiny_hubert_hf
    python scripts/make_tiny_upstream.py --kind hubert --like examples/hubert_pretraining/tiny_progressive_hubert.pt \
        --output outputs/superb/random_tiny_hubert.pt

HuBERT: fairseq's checkpoint format, built with fairseq's own hubert model / hubert_pretraining task.
WavLM: Microsoft unilm's format ({"cfg", "model"}). Loading either takes the same code path as a released
checkpoint (hubert_base_ls960.pt, WavLM-Base.pt). --format hf: a Hugging Face transformers directory
(HubertModel / WavLMModel save_pretrained + preprocessor_config.json), like one downloaded from the Hub.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from laser_fairseq.tiny_upstream import (  # noqa: E402
    make_random_like,
    make_tiny_hubert,
    make_tiny_wavlm,
    save_checkpoint,
    save_tiny_hf_directory,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["hubert", "wavlm"], required=True, help="upstream architecture")
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
    parser.add_argument(
        "--like", metavar="CKPT",
        help="HuBERT only: the cfg and label dictionaries of this fairseq HuBERT checkpoint, freshly initialised "
             "weights (an untrained model of the same shape; --layers/--dim/--pre-ln are ignored)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file or directory")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.layers < 1 or args.dim < 4 or args.dim % 4:
        sys.exit(f"error: --layers must be >= 1 and --dim a positive multiple of 4 (got {args.layers}, {args.dim})")
    if args.format == "hf":
        return write_hf(args)
    if args.like:
        if args.kind != "hubert" or args.format != "original":
            sys.exit("error: --like is for --kind hubert --format original")
        from laser_fairseq.checkpoint_io import CheckpointError, load_checkpoint

        try:
            state = make_random_like(load_checkpoint(args.like), seed=args.seed)
        except (CheckpointError, ValueError, KeyError) as error:
            sys.exit(f"error: {args.like}: {error}")
        args.layers, args.dim = state["cfg"]["model"]["encoder_layers"], state["cfg"]["model"]["encoder_embed_dim"]
    else:
        make = make_tiny_hubert if args.kind == "hubert" else make_tiny_wavlm
        state = make(layers=args.layers, dim=args.dim, layer_norm_first=args.pre_ln, seed=args.seed)
    try:
        save_checkpoint(state, args.output, force=args.force)
    except FileExistsError as error:
        sys.exit(f"error: {error}")
    count = sum(t.numel() for t in state["model"].values())
    print(f"wrote {args.kind} checkpoint {args.output}: {args.layers} blocks, dim {args.dim}, {count:,} parameters")


def write_hf(args):
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        save_tiny_hf_directory(args.output, args.kind, args.layers, args.dim, args.pre_ln, args.seed, args.force)
    except FileExistsError as error:
        sys.exit(f"error: {error}")
    print(f"wrote {args.kind} Hugging Face directory {args.output}: {args.layers} blocks, dim {args.dim}")


if __name__ == "__main__":
    main()
