"""ABX phone discriminability (fastabx, ZeroSpeech 2021 triphone ABX) of every layer of an upstream, and of the
log-mel and MFCC inputs as reference rows, within and across voices, on a split with frame phone labels.

    python scripts/abx.py --upstream examples/hubert_pretraining/tiny_progressive_hubert.pt \\
        --data outputs/synthetic_corpus --split test --out outputs/abx/tiny_progressive

--upstream: any checkpoint this project loads (fairseq HuBERT, unilm WavLM, a LASER training checkpoint, a
Hugging Face directory). --data CORPUS --split SPLIT: CORPUS/SPLIT.tsv with SPLIT.phn (frame phone labels),
SPLIT.voice and dict.phn.txt beside it. Writes DIR/abx.json:

    {"layers": {"cnn": {"within": 31.2, "across": 35.0}, ...}, "inputs": {"log-mel": {...}, "mfcc": {...}},
     "upstream": ..., "upstream_sha256": ..., "split": ..., "items": {...}, "abx": {settings}, "seconds": {...}}

(error rates in %, lower is better, chance 50) and DIR/SPLIT.item, the item file fastabx read. A finished
DIR for the same upstream and split is left as it is; one for another upstream or split is never
overwritten. See docs/abx.md.
"""

import argparse
import os
import sys

from .progress import StderrProgress


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="checkpoint file or Hugging Face directory")
    parser.add_argument("--data", required=True, help="corpus folder with SPLIT.tsv, SPLIT.phn, SPLIT.voice, "
                                                      "dict.phn.txt")
    parser.add_argument("--split", default="test", help="which manifest of --data (default test)")
    parser.add_argument("--out", required=True, help="output folder (abx.json, SPLIT.item)")
    parser.add_argument("--max-utterances", type=int, help="only the first N audio lines of the split")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the upstream runs")
    parser.add_argument("--inputs-only", action="store_true",
                        help="only the log-mel and MFCC rows (no upstream is opened; --upstream is recorded)")
    args = parser.parse_args(argv)
    if args.max_utterances is not None and args.max_utterances < 1:
        parser.error("--max-utterances must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    import torch

    from ..analysis.abx import AbxInputError
    from ..analysis.abx_run import RESULT, AbxRunError, format_table, run_abx
    from ..analysis.phone_labels import FrameLabelError
    from ..checkpoint_io import CheckpointError
    from ..data.audio import AudioError
    from ..data.manifest import ManifestError

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device")
    try:
        record = run_abx(args.upstream, args.data, args.split, args.out, args.max_utterances, args.device,
                         args.inputs_only, StderrProgress("abx"), log=lambda line: sys.stderr.write(line + "\n"))
    except (AbxRunError, AbxInputError, FrameLabelError, CheckpointError, ManifestError, AudioError,
            FileNotFoundError) as error:
        sys.exit(f"error: {error}")
    path = os.path.join(args.out, RESULT)
    if record is None:
        print(f"{path}: already measured for this upstream and split; nothing to do")
        return
    print(format_table(record))
    print(f"wrote {path} ({record['seconds']['total']:.1f} s)")


if __name__ == "__main__":
    main()
