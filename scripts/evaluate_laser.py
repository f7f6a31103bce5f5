#!/usr/bin/env python
"""What LASER does to one upstream: LASER vs its ablations vs the untrained upstream, over several seeds.

Trains the variants with fairseq-hydra-train on DATA/train.tsv (same data, updates, learning rate; one run
per variant and seed):

    laser       soft-DTW divergence + alpha * Contrastive-IDM (the paper's objective)
    sdtw_only   alpha = 0 (the paper's ablation: expected to collapse)
    idm_only    no alignment term (sdtw_weight = 0)
    upstream    no training (the reference row)

then measures every model on held-out sentences (--eval-split, default test): phone probe (frame accuracy
and PER) of the top layer and of the layer that is best on --select-split (default valid), cross-voice
retrieval MAP, voice probe, perturbation invariance, and collapse indicators (mean pairwise cosine and
effective rank of the top layer's frames). Writes results.md, results.csv (per-seed numbers), results.png,
results.json and commands.sh (the exact training commands) to --out (results_<split>.* when --eval-split is
not test, e.g. a held-out-voice split made by scripts/make_voice_split.py). Resumable: finished runs and
measurements are reused, a killed run resumes from its checkpoint_last.pt.

Choosing the learning rate and the number of updates (never on the test split): --grid-lr / --grid-max-update
train the listed variants (default: laser) for every combination and measure them on --select-split only,
writing sweep.md / sweep.csv and the combination with the best top-layer phone accuracy.

    python scripts/evaluate_laser.py --upstream tiny_hubert.pt --data corpus --out effect \\
        --grid-lr 1e-4 3e-4 1e-3 --grid-max-update 200 600 --seeds 2
    python scripts/evaluate_laser.py --upstream tiny_hubert.pt --data corpus --out effect --lr 3e-4 \\
        --max-update 600 --seeds 3
"""

import argparse
import json
import logging
import os
import shlex
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from laser_fairseq.evaluation import table  # noqa: E402
from laser_fairseq.evaluation.measure import EvalSettings, evaluate  # noqa: E402
from laser_fairseq.evaluation.runs import Run, RunError, TrainingSettings, train, write_json_atomic  # noqa: E402
from laser_fairseq.evaluation.variants import VARIANTS, parse_variants  # noqa: E402

DEFAULT_CONFIG_DIR = os.path.join(REPO, "examples", "laser_effect", "config")
SELECTION_KEY = "phone_acc_top"  # what the sweep maximises on --select-split


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
    args = parser.parse_args(argv)
    if (args.grid_lr is None) != (args.grid_max_update is None):
        parser.error("--grid-lr and --grid-max-update go together")
    if args.seeds < 1:
        parser.error("--seeds must be >= 1")
    if args.variants is None:
        args.variants = ["laser"] if args.grid_lr else list(VARIANTS)
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


def runs_for(variants, seeds: int, settings: TrainingSettings):
    """Trained variants: one run per seed; the upstream row: one measurement (nothing random to repeat)."""
    for variant in variants:
        for seed in range(1, seeds + 1) if variant.trains else [0]:
            yield Run(variant, seed, settings)


def model_of(run: Run, out: str) -> str:
    return run.checkpoint(out) if run.variant.trains else run.settings.upstream


def measure_run(run: Run, out: str, split: str, eval_settings: EvalSettings) -> dict:
    cache_key = run.key if run.variant.trains else f"upstream/{os.path.basename(run.settings.upstream)}"
    cache = os.path.join(out, "measures", cache_key, f"{split}.json")
    return evaluate(model_of(run, out), run.settings.data, split, eval_settings, cache)


def best_layer(measures: dict, key: str = "phone_acc") -> str:
    """The layer with the highest ``key`` (None if no layer has it)."""
    scored = [(values.get(key), name) for name, values in measures["layers"].items() if values.get(key) is not None]
    return max(scored)[1] if scored else None


def record(run: Run, reported: dict, selection: dict) -> dict:
    """The flat table record of one run: top-layer values on the reported split, the best layer's phone
    accuracy there, the best layer chosen on the selection split."""
    top = reported["layers"][reported["top_layer"]]
    chosen = best_layer(selection)
    result = {"variant": run.variant.name, "seed": run.seed, "lr": run.settings.lr,
              "max_update": run.settings.max_update if run.variant.trains else 0,
              "top_layer": reported["top_layer"], "best_layer_on_select": chosen}
    for key, value in top.items():
        result[f"{key}_top"] = value
    result["phone_acc_best"] = reported["layers"][chosen].get("phone_acc") if chosen else None
    result["phone_per_best"] = reported["layers"][chosen].get("phone_per") if chosen else None
    for key, value in reported.get("chance", {}).items():
        result[key] = value
    return result


def log(message: str):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_table(args, variants, eval_settings):
    settings = training_settings(args, args.lr, args.max_update)
    records = []
    for run in runs_for(variants, args.seeds, settings):
        if run.variant.trains:
            train(run, args.out, log)
        log(f"[{run.key if run.variant.trains else 'upstream'}] measuring on {args.select_split} and {args.eval_split}")
        selection = measure_run(run, args.out, args.select_split, eval_settings)
        reported = measure_run(run, args.out, args.eval_split, eval_settings)
        records.append(record(run, reported, selection))
    write_results(args, records, results_stem(args.eval_split), reported_split=args.eval_split)
    return records


def results_stem(eval_split: str) -> str:
    """results.* for the test split; results_<split>.* for another one, so both tables can live in one --out."""
    return "results" if eval_split == "test" else f"results_{eval_split}"


def run_sweep(args, variants, eval_settings):
    records = []
    for lr in args.grid_lr:
        for max_update in args.grid_max_update:
            settings = training_settings(args, lr, max_update)
            for run in runs_for(variants, args.seeds, settings):
                if run.variant.trains:
                    train(run, args.out, log)
                log(f"[{run.key}] measuring on {args.select_split}")
                selection = measure_run(run, args.out, args.select_split, eval_settings)
                entry = record(run, selection, selection)
                entry["variant"] = f"{run.variant.name} lr={lr:g} u={max_update}" if run.variant.trains else "upstream"
                records.append(entry)
    trained = [r for r in records if r["variant"] != "upstream" and r.get(SELECTION_KEY) is not None]
    summary = table.summarise(trained)
    chosen = max(summary, key=lambda name: summary[name][SELECTION_KEY].mean) if summary else None
    write_results(args, records, "sweep", reported_split=args.select_split, chosen=chosen)
    return records


def training_settings(args, lr: float, max_update: int) -> TrainingSettings:
    return TrainingSettings(
        upstream=args.upstream, data=args.data, lr=lr, max_update=max_update,
        config_dir=args.config_dir, config_name=args.config_name, overrides=tuple(args.override),
    )


def write_results(args, records, stem: str, reported_split: str, chosen=None):
    paths = {ext: os.path.join(args.out, f"{stem}.{ext}") for ext in ("md", "csv", "png")}
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv]) if sys.argv else ""
    lines = [f"# {'Sweep (selection split only)' if stem == 'sweep' else 'LASER vs its ablations'}", "",
             f"- upstream: `{args.upstream}`; data: `{args.data}`; measured on `{reported_split}`"
             + (f"; best layer chosen on `{args.select_split}`" if stem != "sweep" else ""),
             f"- command: `{command}`",
             "- mean ± sample std over seeds (trained variants); the upstream is measured once", ""]
    chances = {key: value for key, value in records[0].items() if key.endswith("_chance") and value is not None}
    if chances:
        lines.insert(-1, "- chance levels: " + ", ".join(f"{key} {value:.3f}" for key, value in chances.items()))
    if chosen:
        lines += [f"Chosen on `{args.select_split}` by the highest mean {SELECTION_KEY}: **{chosen}**", ""]
    lines += [table.markdown_table(records), "", "## Per seed", "", table.per_seed_table(records), ""]
    temporary = paths["md"] + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    os.replace(temporary, paths["md"])
    table.write_csv(paths["csv"], records)
    table.plot(paths["png"], records)
    write_json_atomic(os.path.join(args.out, f"{stem}.json"), {"records": records, "chosen": chosen})
    print("\n".join(lines))
    for path in paths.values():
        print(f"wrote {path}")


def main(argv=None):
    args = parse_args(argv)
    # fairseq-hydra-train runs in its hydra.run.dir: every path handed to it must be absolute
    args.upstream, args.data, args.out, args.config_dir = (
        os.path.abspath(path) for path in (args.upstream, args.data, args.out, args.config_dir))
    try:
        variants = parse_variants(args.variants)
    except ValueError as error:
        sys.exit(f"error: {error}")
    check_inputs(args)
    os.makedirs(args.out, exist_ok=True)
    eval_settings = EvalSettings(
        max_utterances=args.max_eval_utterances, probe_train_utterances=args.probe_train_utterances, device=args.device
    )
    try:
        if args.grid_lr:
            run_sweep(args, variants, eval_settings)
        else:
            run_table(args, variants, eval_settings)
    except RunError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    main()
