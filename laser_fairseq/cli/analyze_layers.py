"""Layer-wise analysis of a HuBERT / WavLM upstream (original or LASER checkpoint), optionally vs another.

For every layer (cnn, block0_in, block1 .. blockL) on the utterances of a manifest:
input likeness (linear CKA with log-mel), perturbation invariance (DTW-aligned cosine similarity to the
utterance's speed+pitch perturbed copy), voice information (sentence-held-out linear probe accuracy) and
content (cross-voice same-sentence retrieval MAP), and with frame phone labels a linear phone probe
(frame accuracy and phone error rate on held-out sentences). See docs/analysis.md and docs/phone_probe.md.

    python scripts/analyze_layers.py --checkpoint hubert_base_ls960.pt --compare laser_hubert.pt \\
        --manifest manifests/demo/train.tsv

Voice / sentence ids: <manifest stem>.voice and <manifest stem>.sent beside the manifest, or --voices /
--sentences; without them the voice probe and the retrieval are reported as n/a.
Phone probe: frame labels <manifest stem>.phn + dict.phn.txt beside the manifest (or --phone-labels /
--phone-dict), trained on train.tsv + train.phn beside it (or --probe-train-manifest / --probe-train-labels);
without them phone_acc / phone_per are n/a.
Writes layers.csv, layers.md, layers.png (+ deltas.png with --compare) and summary.json to --out
(default outputs/analysis/<name>). Progress goes to stderr.
"""

import argparse
import os
import sys

import torch

from ..analysis import abx, report, run
from ..analysis.features import DEFAULT_PITCH_SHIFTS, DEFAULT_SPEED_FACTORS, make_perturber
from ..analysis.phone_labels import DEFAULT_PROBE_TRAIN_UTTERANCES, load_phone_probe_labels
from ..analysis.utterances import load_utterances
from ..checkpoint_io import CheckpointError
from ..data.audio import AudioError
from ..data.manifest import ManifestError
from .progress import StderrProgress


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="A: original HuBERT/WavLM or LASER checkpoint")
    parser.add_argument("--compare", help="B: a second checkpoint, analysed on the same utterances (Δ = B - A)")
    parser.add_argument("--manifest", required=True, help="fairseq audio manifest (tsv), 16 kHz mono audio")
    parser.add_argument("--out", help="output directory (default outputs/analysis/<name>)")
    parser.add_argument("--max-utterances", type=int, help="analyse only the first N audio lines")
    parser.add_argument("--seed", type=int, default=1, help="seed of the perturbations (default 1)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where the upstream runs")
    parser.add_argument("--upstream", help="original upstream of a LASER checkpoint whose upstream_path moved")
    parser.add_argument("--voices", help="voice id per audio line (default <manifest stem>.voice)")
    parser.add_argument("--sentences", help="sentence id per audio line (default <manifest stem>.sent)")
    parser.add_argument("--speed-factors", type=float, nargs="+", default=list(DEFAULT_SPEED_FACTORS),
                        help=f"perturbation speed factors (default {' '.join(map(str, DEFAULT_SPEED_FACTORS))})")
    parser.add_argument("--pitch-shifts", type=float, nargs="+", default=list(DEFAULT_PITCH_SHIFTS),
                        help=f"perturbation pitch shifts in semitones (default "
                             f"{' '.join(map(str, DEFAULT_PITCH_SHIFTS))})")
    parser.add_argument("--phone-labels", help="frame phone labels of --manifest (default <manifest stem>.phn)")
    parser.add_argument("--phone-dict", help="phone dictionary, 'symbol count' lines (default dict.phn.txt beside "
                                             "--manifest)")
    parser.add_argument("--probe-train-manifest", help="manifest whose utterances train the phone probe (default "
                                                       "train.tsv beside --manifest)")
    parser.add_argument("--probe-train-labels", help="frame phone labels of --probe-train-manifest (default "
                                                     "<its stem>.phn)")
    parser.add_argument("--probe-train-utterances", type=int, default=DEFAULT_PROBE_TRAIN_UTTERANCES,
                        help=f"train the phone probe on at most N utterances, evenly spaced over the training "
                             f"manifest (default {DEFAULT_PROBE_TRAIN_UTTERANCES})")
    parser.add_argument("--abx", action="store_true",
                        help="also fastabx triphone ABX within / across voices of every layer (the manifest must be "
                             "CORPUS/SPLIT.tsv with SPLIT.phn, SPLIT.voice and dict.phn.txt, see docs/abx.md); the "
                             "item file is written to --out")
    parser.add_argument("--force", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    if args.max_utterances is not None and args.max_utterances < 1:
        parser.error("--max-utterances must be >= 1")
    if args.probe_train_utterances < 2:
        parser.error("--probe-train-utterances must be >= 2")
    return args


def default_output_dir(args) -> str:
    name = run.checkpoint_name(args.checkpoint)
    if args.compare:
        name = f"{name}_vs_{run.checkpoint_name(args.compare)}"
    return os.path.join("outputs", "analysis", name)


def analyze(path: str, label: str, args, utterance_set, perturber, phones, abx_split, out_dir: str):
    split_name = os.path.splitext(os.path.basename(args.manifest))[0]
    return run.analyze_checkpoint(
        path, label, upstream_path=args.upstream, device=args.device, seed=args.seed, utterance_set=utterance_set,
        perturber=perturber, phones=phones, progress=StderrProgress(label),
        log=lambda line: sys.stderr.write(line + "\n"), abx_split=abx_split,
        item_path=os.path.join(out_dir, f"{split_name}.item"),
    )


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda, but torch sees no CUDA device")
    out_dir = args.out or default_output_dir(args)
    files = run.output_paths(out_dir, bool(args.compare))
    existing = [path for path in files.values() if os.path.exists(path)]
    if existing and not args.force:
        sys.exit(f"error: {', '.join(existing)} exist(s); pass --force to replace, or choose --out")
    try:
        utterance_set = load_utterances(args.manifest, args.voices, args.sentences, args.max_utterances)
        perturber = make_perturber(args.speed_factors, args.pitch_shifts)
        phones = load_phone_probe_labels(
            utterance_set, args.phone_labels, args.phone_dict, args.probe_train_manifest, args.probe_train_labels,
            args.probe_train_utterances,
        )
        abx_split = None
        if args.abx:
            corpus, split_name = os.path.split(os.path.abspath(args.manifest))
            abx_split = abx.load_abx_split(corpus, os.path.splitext(split_name)[0], args.max_utterances)
        main_analysis = analyze(args.checkpoint, "A", args, utterance_set, perturber, phones, abx_split, out_dir)
        compare = (analyze(args.compare, "B", args, utterance_set, perturber, phones, abx_split, out_dir)
                   if args.compare else None)
    except (CheckpointError, ManifestError, AudioError, FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")
    settings = {
        "checkpoint": args.checkpoint,
        "compare": args.compare,
        "upstream": args.upstream,
        "manifest": args.manifest,
        "voices": utterance_set.voices_path,
        "sentences": utterance_set.sentences_path,
        "max_utterances": args.max_utterances,
        "seed": args.seed,
        "device": args.device,
        "speed_factors": args.speed_factors,
        "pitch_shifts": args.pitch_shifts,
        "phone_labels": phones[0].test.labels_path if phones[0] is not None else None,
        "probe_train_utterances": args.probe_train_utterances,
        "abx": abx.abx_settings() if args.abx else None,
    }
    run.write_outputs(files, main_analysis, compare, settings)
    print(report.markdown_report(main_analysis, compare, settings))
    print("wrote:")
    for path in files.values():
        print(f"  {path}")


if __name__ == "__main__":
    main()
