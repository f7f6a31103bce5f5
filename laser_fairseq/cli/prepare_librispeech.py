"""Write fairseq manifests (train.tsv / valid.tsv) and transcripts (.wrd / .ltr, dict.ltr.txt) for LibriSpeech.

    python scripts/prepare_librispeech.py /data/LibriSpeech --subsets train-clean-100 --dest manifests/ls100 \
        --eval-subsets dev-clean dev-other test-clean test-other

--eval-subsets writes each subset whole as a named split (dev-other -> dev_other.tsv / .wrd / .ltr), the
names fairseq's CTC recipes and examples/ctc/config/hubert_base_100h.yaml (valid_subset: dev_other) expect.

LIBRISPEECH_ROOT holds the official layout (SUBSET/SPEAKER/CHAPTER/*.flac + SPEAKER-CHAPTER.trans.txt).
Without --subsets, every audio file under the root is used; if the tree has no *.trans.txt files it is taken
as a plain folder of wav/flac files and only manifests are written (no .wrd/.ltr).

Every file is checked (readable, 16 kHz, mono, finite, not all silent, at least --min-samples samples) and,
for LibriSpeech, must have a transcript line. Rejected files are listed with their reason on stderr and in
DEST/rejected.tsv; they never silently disappear. Outputs are written to temporary files and renamed at the
end; existing outputs are only replaced with --force.
"""

import argparse
import os
import sys

from laser_fairseq.data.prepare import DEFAULT_MIN_SAMPLES, PrepareError, prepare, split_name


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", metavar="LIBRISPEECH_ROOT", help="corpus root (holds the subset folders)")
    parser.add_argument(
        "--subsets", nargs="+", default=[],
        help="LibriSpeech subsets under the root, e.g. train-clean-100 train-clean-360 (default: whole root)",
    )
    parser.add_argument(
        "--eval-subsets", nargs="+", default=[],
        help="subsets written whole as named splits for CTC / SUPERB evaluation, e.g. dev-clean dev-other "
             "test-clean test-other -> dev_clean.tsv/.wrd/.ltr, dev_other.* ... (needs --subsets)",
    )
    parser.add_argument("--dest", required=True, help="output folder for the manifests and transcripts")
    parser.add_argument(
        "--valid-percent", type=float, default=0.01,
        help="fraction (0..1, as fairseq's wav2vec_manifest.py) of the accepted files put in valid.tsv; "
             "0 writes train only (default 0.01)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the train/valid split (default 1)")
    parser.add_argument(
        "--min-samples", type=int, default=DEFAULT_MIN_SAMPLES,
        help=f"reject files shorter than this (default {DEFAULT_MIN_SAMPLES} = 0.5 s, the laser task's "
             f"min_sample_size; never below 400, the CNN's receptive field)",
    )
    parser.add_argument("--sample-rate", type=int, default=16_000, help="required sample rate (default 16000)")
    parser.add_argument(
        "--ext", nargs="+", default=["flac"], help="audio file extensions to collect (default flac)"
    )
    parser.add_argument("--force", action="store_true", help="replace existing outputs in --dest")
    parser.add_argument(
        "--workers", type=int, default=min(8, os.cpu_count() or 1),
        help="processes checking audio files (default: CPU count, at most 8)",
    )
    parser.add_argument(
        "--progress-every", type=int, default=1000, help="print a progress line every N files (default 1000)"
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        result = prepare(
            args.root,
            args.dest,
            subsets=args.subsets,
            valid_percent=args.valid_percent,
            seed=args.seed,
            min_samples=args.min_samples,
            extensions=args.ext,
            force=args.force,
            workers=args.workers,
            sample_rate=args.sample_rate,
            progress_every=max(1, args.progress_every),
            eval_subsets=args.eval_subsets,
        )
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    evaluation = "".join(f", {len(result.evaluation[split_name(s)])} {split_name(s)}" for s in args.eval_subsets)
    print(
        f"wrote {len(result.train)} train and {len(result.valid)} valid utterances{evaluation} to {args.dest}"
        f"{'' if result.has_transcripts else ' (no transcripts)'}; {len(result.rejected)} file(s) rejected"
        f"{', listed in ' + os.path.join(args.dest, 'rejected.tsv') if result.rejected else ''}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
