"""The LASER effect study: train the variants over seeds, measure every model, write the table (or the sweep).

``run_study(options)`` is what ``laser-evaluate-laser`` / ``scripts/evaluate_laser.py`` does (docs in
examples/laser_effect/README.md): training runs (:mod:`.runs`), measures of each model on the selection and
the eval split (:mod:`.measure`), the field's yardsticks (:mod:`.yardsticks`: SUPERB-PR per probe seed, ABX of
the top and the best layer), one record per (variant, seed) (:mod:`.records`), the table files
(:mod:`.results`). Everything is cached under ``--out``: re-running a finished study only measures what is
new (e.g. the yardstick columns), and trains nothing again.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

from ..files import read_json, sha256_of, write_json
from . import records as rows
from . import table
from .measure import EvalSettings, evaluate
from .results import write_results
from .runs import Run, RunError, TrainingSettings, finished, train
from .variants import Variant
from .yardsticks import YardstickSettings, abx_of_layers, superb_per

SELECTION_KEY = "phone_acc_top"  # what the sweep maximises on the selection split
STAMP = "study.json"  # which upstream and data an --out holds


class StudyError(RuntimeError):
    """A study that cannot run as asked; the message names the file and what to do."""


@dataclass(frozen=True)
class StudyOptions:
    upstream: str  # absolute paths: fairseq-hydra-train runs in its own folder
    data: str
    out: str
    variants: Tuple[Variant, ...]
    seeds: int
    lr: float
    max_update: int
    config_dir: str
    config_name: str
    overrides: Tuple[str, ...] = ()
    grid_lr: Optional[Tuple[float, ...]] = None
    grid_max_update: Optional[Tuple[int, ...]] = None
    select_split: str = "valid"
    eval_split: str = "test"
    eval_settings: EvalSettings = field(default_factory=EvalSettings)
    yardsticks: YardstickSettings = field(default_factory=YardstickSettings)
    command: str = ""  # the command line, for the results' header
    measure_only: bool = False  # train nothing: runs that have not finished are left out of the table (listed)


def log(message: str):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def training_settings(options: StudyOptions, lr: float, max_update: int) -> TrainingSettings:
    return TrainingSettings(upstream=options.upstream, data=options.data, lr=lr, max_update=max_update,
                            config_dir=options.config_dir, config_name=options.config_name,
                            overrides=tuple(options.overrides))


def runs_for(variants: Sequence[Variant], seeds: int, settings: TrainingSettings,
             upstream_seeds: bool = False) -> Iterator[Run]:
    """Trained variants: one run per seed. The upstream row: one model; measured once (seed 0), or once per
    SUPERB-PR probe seed 1..N when ``upstream_seeds`` (its other measures are the same for every seed)."""
    for variant in variants:
        for seed in range(1, seeds + 1) if variant.trains or upstream_seeds else [0]:
            yield Run(variant, seed, settings)


def model_of(run: Run, out: str) -> str:
    return run.checkpoint(out) if run.variant.trains else run.settings.upstream


def measures_folder(run: Run, out: str) -> str:
    """``measures/<run key>`` of a trained run; ``measures/upstream/<file name>`` of the upstream (any seed)."""
    key = run.key if run.variant.trains else f"upstream/{os.path.basename(run.settings.upstream)}"
    return os.path.join(out, "measures", key)


def measure_run(run: Run, out: str, split: str, settings: EvalSettings) -> dict:
    return evaluate(model_of(run, out), run.settings.data, split, settings,
                    os.path.join(measures_folder(run, out), f"{split}.json"))


def check_out(options: StudyOptions):
    """``out/study.json`` records the upstream (path, sha256) and the data of a study; another upstream in the
    same --out is refused before anything is written."""
    stamp = {"upstream": options.upstream, "upstream_sha256": sha256_of(options.upstream), "data": options.data}
    path = os.path.join(options.out, STAMP)
    if os.path.exists(path):
        held = read_json(path)
        if held.get("upstream_sha256") != stamp["upstream_sha256"] or held.get("data") != stamp["data"]:
            raise StudyError(
                f"{path}: this --out holds the study of another upstream or corpus ({held.get('upstream')}, sha256 "
                f"{str(held.get('upstream_sha256'))[:12]}…, data {held.get('data')}); nothing was changed: pass a "
                f"new --out for {options.upstream} (sha256 {stamp['upstream_sha256'][:12]}…) on {options.data}")
        return
    runs = os.path.join(options.out, "runs")
    if os.path.isdir(runs) and os.listdir(runs):
        log(f"{options.out}: runs of a study from before {STAMP} existed; their done.json commands guard them")
    os.makedirs(options.out, exist_ok=True)
    write_json(path, stamp)


def yardstick_columns(run: Run, options: StudyOptions, entry: dict) -> dict:
    """SUPERB-PR PER of the run's model with probe seed = the run's seed (for the variants that get it), and ABX
    of its top and best layer, on the eval split (each as asked by ``options.yardsticks``)."""
    settings, model, folder = options.yardsticks, model_of(run, options.out), measures_folder(run, options.out)
    if settings.superb_pr_of(entry["variant"]):
        log(f"[{entry['variant']} seed {run.seed}] SUPERB-PR (probe seed {run.seed}) on {options.eval_split}")
        entry[rows.SUPERB_PER] = superb_per(model, options.data, folder, run.seed, options.eval_split, settings)
    if settings.abx:
        layers = [entry["top_layer"]] + ([entry["best_layer_on_select"]] if entry["best_layer_on_select"] else [])
        log(f"[{entry['variant']} seed {run.seed}] ABX of {', '.join(dict.fromkeys(layers))} on {options.eval_split}")
        rows.add_abx(entry, abx_of_layers(model, options.data, options.eval_split, layers, folder, settings))
    return entry


def run_table(options: StudyOptions) -> List[dict]:
    settings = training_settings(options, options.lr, options.max_update)
    entries, missing = [], []
    for run in runs_for(options.variants, options.seeds, settings,
                        upstream_seeds=options.yardsticks.superb_pr_of("upstream")):
        if run.variant.trains and options.measure_only and finished(run, options.out) is None:
            log(f"[{run.key}] not trained: left out (--measure-only)")
            missing.append(run.key)
            continue
        if run.variant.trains:
            train(run, options.out, log)
        name = run.key if run.variant.trains else "upstream"
        log(f"[{name}] measuring on {options.select_split} and {options.eval_split}")
        selection = measure_run(run, options.out, options.select_split, options.eval_settings)
        reported = measure_run(run, options.out, options.eval_split, options.eval_settings)
        entry = rows.record(run.variant.name, run.seed, settings.lr,
                            settings.max_update if run.variant.trains else 0, reported, selection)
        entries.append(yardstick_columns(run, options, entry))
    if any(options.yardsticks.superb_pr_of(variant.name) for variant in options.variants):
        rows.add_relative_per(entries)
    write_results(options, entries, results_stem(options.eval_split), reported_split=options.eval_split,
                  missing=missing)
    return entries


def results_stem(eval_split: str) -> str:
    """results.* for the test split; results_<split>.* for another one, so both tables can live in one --out."""
    return "results" if eval_split == "test" else f"results_{eval_split}"


def run_sweep(options: StudyOptions) -> List[dict]:
    """Every (lr, updates) of the grid, measured on the selection split only (no yardsticks: the sweep picks by
    the top layer's phone accuracy); writes sweep.* with the chosen setting."""
    entries = []
    for lr in options.grid_lr:
        for max_update in options.grid_max_update:
            settings = training_settings(options, lr, max_update)
            for run in runs_for(options.variants, options.seeds, settings):
                if run.variant.trains:
                    train(run, options.out, log)
                log(f"[{run.key}] measuring on {options.select_split}")
                selection = measure_run(run, options.out, options.select_split, options.eval_settings)
                name = f"{run.variant.name} lr={lr:g} u={max_update}" if run.variant.trains else "upstream"
                entries.append(rows.record(name, run.seed, lr, max_update if run.variant.trains else 0,
                                           selection, selection))
    chosen = choose_setting(entries)
    write_results(options, entries, "sweep", reported_split=options.select_split, chosen=chosen)
    return entries


def choose_setting(entries: Sequence[dict]) -> Optional[str]:
    """The trained setting with the highest mean :data:`SELECTION_KEY` (None if none has it)."""
    trained = [r for r in entries if r["variant"] != "upstream" and r.get(SELECTION_KEY) is not None]
    summary = table.summarise(trained)
    return max(summary, key=lambda name: summary[name][SELECTION_KEY].mean) if summary else None


def run_study(options: StudyOptions) -> List[dict]:
    """The sweep (with a grid) or the table; StudyError / RunError say what to do."""
    check_out(options)
    return run_sweep(options) if options.grid_lr else run_table(options)


__all__ = ["StudyError", "StudyOptions", "RunError", "run_study", "SELECTION_KEY"]
