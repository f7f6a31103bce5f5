"""What LASER does to one upstream: LASER vs its ablations vs the untrained upstream, over several seeds.

Trains the variants with fairseq-hydra-train on DATA/train.tsv (same data, updates, learning rate; one run
per variant and seed):
    laser       soft-DTW divergence + alpha * Contrastive-IDM (the paper's objective)
    sdtw_only   alpha = 0 (the paper's ablation: expected to collapse)
    idm_only    no alignment term (sdtw_weight = 0)
    upstream    no training (the reference row)

then measures every model on held-out sentences (--eval-split, default test): phone probe (frame accuracy
and PER) of the top layer and of the layer that is best on --select-split (default valid), cross-voice
retrieval MAP, voice probe, perturbation invariance, collapse indicators (mean pairwise cosine and
effective rank of the top layer's frames), and the field's yardsticks: SUPERB phone recognition through
s3prl's recipe (PER, and relative to the upstream's as the paper reports it, paired by probe seed; the probe
trains on train and picks its checkpoint on valid) and fastabx triphone ABX within / across voices of the top
and the best layer. Writes results.md, results.csv (per-seed numbers), results.png, results.json and
commands.sh (the exact training commands) to --out (results_<split>.* when --eval-split is not test, e.g. a
held-out-voice split made by scripts/make_voice_split.py). Resumable: finished runs and measurements are
reused (a finished --out re-run with new columns measures only those), a killed run resumes from its last checkpoint.

Choosing the learning rate and the number of updates (never on the test split): --grid-lr / --grid-max-update
train the listed variants (default: laser) for every combination and measure them on --select-split only,
writing sweep.md / sweep.csv and the combination with the best top-layer phone accuracy.

    python scripts/evaluate_laser.py --upstream tiny_hubert.pt --data corpus --out effect \\
        --grid-lr 1e-4 3e-4 1e-3 --grid-max-update 200 600 --seeds 2
    python scripts/evaluate_laser.py --upstream tiny_hubert.pt --data corpus --out effect --lr 3e-4 \\
        --max-update 600 --seeds 3
"""

import argparse
import logging
import os
import shlex
import sys

from ..checkout import REPO
from ..evaluation.measure import EvalSettings
from ..evaluation.superb_pr import PRESETS
from ..evaluation.variants import VARIANTS

DEFAULT_CONFIG_DIR = os.path.join(REPO, "examples", "laser_effect", "config")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="original upstream checkpoint (fairseq HuBERT / unilm WavLM)")
    parser.add_argument("--data", required=True,
                        help="corpus folder: train.tsv (training), the select and eval splits' .tsv, with .sent/"
                             ".voice side files and .phn frame labels (scripts/make_synthetic_corpus.py makes one)")
    parser.add_argument("--out", required=True, help="output folder (created; reused to resume)")
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"variants to run, from {sorted(VARIANTS)} (default: all four; with a grid: laser)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N per trained variant (default 3)")
    parser.add_argument("--lr", type=float, default=3e-4, help="learning rate of the trained variants")
    parser.add_argument("--max-update", type=int, default=600, help="updates of the trained variants")
    parser.add_argument("--grid-lr", type=float, nargs="+", help="sweep: learning rates to try")
    parser.add_argument("--grid-max-update", type=int, nargs="+", help="sweep: numbers of updates to try")
    parser.add_argument("--select-split", default="valid",
                        help="split that picks the best layer and the sweep's setting (default valid)")
    parser.add_argument("--eval-split", default="test", help="split of the reported table (default test)")
    parser.add_argument("--max-eval-utterances", type=int,
                        help="measure only the first N audio lines of each split (default all)")
    parser.add_argument("--probe-train-utterances", type=int, default=500,
                        help="train.tsv utterances that fit the phone probe of every model (default 500)")
    parser.add_argument("--config-dir", default=DEFAULT_CONFIG_DIR, help="hydra config folder of the LASER runs")
    parser.add_argument("--config-name", default="tiny_hubert", help="hydra config name (default tiny_hubert)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra fairseq-hydra-train override for every run (repeatable)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where models are measured")
    parser.add_argument("--superb-pr-preset", choices=sorted(PRESETS), default="miniature",
                        help="SUPERB-PR recipe scale (default miniature: 600 steps; full: SUPERB's 100,000)")
    parser.add_argument("--superb-pr-steps", type=int, help="SUPERB-PR step budget (default: the preset's)")
    parser.add_argument("--superb-pr-variants", nargs="+", metavar="VARIANT",
                        help="SUPERB PR (one s3prl training per model and probe seed) for these variants only, "
                             "the others n/a (default: all; the relative PER needs upstream among them)")
    parser.add_argument("--no-superb-pr", action="store_true", help="skip the SUPERB-PR columns (quick runs)")
    parser.add_argument("--no-abx", action="store_true", help="skip the ABX columns (quick runs)")
    parser.add_argument("--measure-only", action="store_true",
                        help="train nothing: tabulate the runs that finished (the others are listed as left out)")
    args = parser.parse_args(argv)
    if (args.grid_lr is None) != (args.grid_max_update is None):
        parser.error("--grid-lr and --grid-max-update go together")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.superb_pr_steps is not None and args.superb_pr_steps < 1:
        parser.error("--superb-pr-steps must be >= 1")
    if args.variants is None:
        args.variants = ["laser"] if args.grid_lr else list(VARIANTS)
    outside = [name for name in args.superb_pr_variants or [] if name not in args.variants]
    if outside:
        parser.error(f"--superb-pr-variants {' '.join(outside)}: not among the variants run "
                     f"({' '.join(args.variants)}); list only those, or add them to --variants")
    if args.select_split == args.eval_split and not args.grid_lr:
        parser.error("--select-split and --eval-split must differ: the best layer is chosen on held-out data "
                     "other than the reported split")
    return args


def check_inputs(args):
    if not os.path.isfile(args.upstream):
        sys.exit(f"error: --upstream {args.upstream}: file not found")
    splits = ["train", args.select_split] + ([] if args.grid_lr else [args.eval_split])
    for split in splits:
        manifest = os.path.join(args.data, f"{split}.tsv")
        if not os.path.isfile(manifest):
            sys.exit(f"error: {manifest} not found: --data needs train.tsv and the {split!r} split")


def main(argv=None):
    args = parse_args(argv)
    logging.getLogger().setLevel(logging.WARNING)
    from ..evaluation.runs import RunError
    from ..evaluation.study import StudyError, StudyOptions, run_study
    from ..evaluation.superb_pr import SuperbPRError
    from ..evaluation.variants import parse_variants
    from ..evaluation.yardsticks import YardstickSettings

    # fairseq-hydra-train runs in its hydra.run.dir: every path handed to it must be absolute
    upstream, data, out, config_dir = (os.path.abspath(p) for p in (args.upstream, args.data, args.out, args.config_dir))
    args.upstream, args.data = upstream, data
    try:
        variants = parse_variants(args.variants)
    except ValueError as error:
        sys.exit(f"error: {error}")
    check_inputs(args)
    command = shlex.join([os.path.relpath(sys.executable), *(sys.argv if argv is None else ["evaluate_laser", *argv])])
    options = StudyOptions(
        upstream=upstream, data=data, out=out, variants=tuple(variants), seeds=args.seeds, lr=args.lr,
        max_update=args.max_update, config_dir=config_dir, config_name=args.config_name,
        overrides=tuple(args.override), grid_lr=tuple(args.grid_lr) if args.grid_lr else None,
        grid_max_update=tuple(args.grid_max_update) if args.grid_max_update else None,
        select_split=args.select_split, eval_split=args.eval_split,
        eval_settings=EvalSettings(max_utterances=args.max_eval_utterances,
                                   probe_train_utterances=args.probe_train_utterances, device=args.device),
        yardsticks=YardstickSettings(superb_pr=not args.no_superb_pr, superb_pr_preset=args.superb_pr_preset,
                                     superb_pr_steps=args.superb_pr_steps,
                                     superb_pr_variants=args.superb_pr_variants and tuple(args.superb_pr_variants),
                                     abx=not args.no_abx,
                                     abx_max_utterances=args.max_eval_utterances, device=args.device),
        command=command, measure_only=args.measure_only,
    )
    try:
        run_study(options)
    except (RunError, StudyError, SuperbPRError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
