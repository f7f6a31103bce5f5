"""Quality along training: the layer analysis of the checkpoints fairseq keeps every N updates.

With ``curve: {every: N}`` in a schedule, each iteration trains with ``checkpoint.save_interval_updates=N``
and ``checkpoint.keep_interval_updates=-1`` (fairseq keeps ``checkpoint_<epoch>_<updates>.pt`` every N
updates), and the stage ``iter<i>.curve`` analyses each of them (N, 2N, ... below ``max_update``) like the
final model: ``RUN/iter<i>/curve/u<updates>/`` holds its analysis.json, layers.csv, layers.md. The point at
``max_update`` is the iteration's own analysis (``iter<i>/analysis``), so the final model is not analysed
twice. A point is finished once its three files are there; an interrupted stage resumes at the first
missing point.

``collect_points`` of a run: every point of every analysed iteration, with the updates counted from the start
of the schedule (``total_updates``) so that schedules of different structure share one axis.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import re
import shutil
import statistics
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from ..checkpoint_io import load_checkpoint, write_checkpoint
from ..files import atomic_directory, read_json
from .. import markdown
from ..plotting import pyplot
from .layer_analysis import ANALYSIS_JSON, LAYERS_CSV, LAYERS_MD, analyze_checkpoint
from .schedule import AnalysisSettings, Schedule
from .training import TrainingError, pretrained_checkpoint
POINT_FILES = (ANALYSIS_JSON, LAYERS_CSV, LAYERS_MD)
_INTERVAL_CHECKPOINT = re.compile(r"^checkpoint_\d+_(\d+)\.pt$")


def point_updates(max_update: int, every: int) -> List[int]:
    """The updates analysed by the curve stage: every, 2 every, ... below ``max_update`` (which the
    iteration's analysis covers)."""
    return list(range(every, max_update, every))


def point_dir(curve_dir: str, updates: int) -> str:
    return os.path.join(curve_dir, f"u{updates}")


def point_done(directory: str) -> bool:
    return all(os.path.isfile(os.path.join(directory, name)) for name in POINT_FILES)


def remove_leftovers(curve_dir: str):
    """Half-written points of a killed run (``u<updates>.tmp-<pid>``, see ``files.atomic_directory``)."""
    for path in glob.glob(os.path.join(curve_dir, "u*.tmp-*")):
        shutil.rmtree(path, ignore_errors=True)


def interval_checkpoint(save_dir: str, updates: int) -> str:
    """fairseq's ``checkpoint_<epoch>_<updates>.pt`` in ``save_dir``; a clear error when it is not there."""
    found = [path for path in glob.glob(os.path.join(save_dir, f"checkpoint_*_{updates}.pt"))
             if _INTERVAL_CHECKPOINT.match(os.path.basename(path))]
    if len(found) != 1:
        kept = sorted(int(m.group(1)) for m in map(_INTERVAL_CHECKPOINT.match, os.listdir(save_dir)) if m)
        raise TrainingError(f"{save_dir}: no checkpoint_<epoch>_{updates}.pt for the curve (kept: {kept or 'none'}); "
                            f"the curve needs the checkpoints of a training run with curve.every set: pass "
                            f"--force-stage for the iteration's train stage to retrain it")
    return found[0]


def analyze_point(save_dir: str, updates: int, data_dir: str, settings: AnalysisSettings, device: str,
                  label: str, directory: str):
    """Analyse the checkpoint kept at ``updates`` into ``directory`` (written whole or not at all)."""
    checkpoint = interval_checkpoint(save_dir, updates)
    with atomic_directory(directory) as temporary:
        os.makedirs(temporary)
        model = os.path.join(temporary, "model.pt")
        write_checkpoint(pretrained_checkpoint(load_checkpoint(checkpoint)), model)
        analyze_checkpoint(model, data_dir, settings, device, label, temporary, source=checkpoint)
        os.remove(model)  # fairseq's checkpoint stays in save_dir; the analysis does not need a copy


def collect_points(schedule: Schedule, stage_dir: Callable[[str, str], str],
                   done_stamp: Callable[[str], Optional[dict]],
                   targets_pnmi: Callable[[str], Optional[float]] = lambda name: None) -> List[dict]:
    """Every analysed point of the run: {iteration, updates, total_updates, targets_pnmi, layers}, in training
    order (empty without a curve).

    ``done_stamp(stage_name)``: the stamp of a finished stage, else None. The points are those the stamps
    record (a curve stage's analysed updates, a training stage's updates for the iteration's final point), not
    those the schedule would give now: a schedule changed after a stage ran (e.g. a longer iteration, not run
    yet) reports what was measured. ``targets_pnmi(iteration_name)``: the PNMI of the targets the iteration
    trains on."""
    if schedule.curve.every is None:
        return []
    points, offset = [], 0
    for iteration in schedule.iterations:
        curve_stamp, train_stamp = done_stamp(f"{iteration.name}.curve"), done_stamp(f"{iteration.name}.train")
        trained = (train_stamp or {}).get("record", {}).get("updates", iteration.max_update)
        updates = (curve_stamp or {}).get("record", {}).get("points", [])
        directories = [(u, point_dir(stage_dir(iteration.name, "curve"), u)) for u in updates]
        if done_stamp(f"{iteration.name}.analysis") is not None:
            directories.append((trained, stage_dir(iteration.name, "analysis")))
        for done_updates, directory in directories:
            layers = read_json(os.path.join(directory, ANALYSIS_JSON))["layers"]
            points.append({"iteration": iteration.name, "updates": done_updates,
                           "total_updates": offset + done_updates, "targets_pnmi": targets_pnmi(iteration.name),
                           "layers": layers})
        offset += trained
    return points


def best_layer(layers: Sequence[dict], measure: str, higher_is_better: bool = True) -> Optional[dict]:
    """The layer with the best value of ``measure`` (None when no layer has one)."""
    scored = [layer for layer in layers if layer.get(measure) is not None]
    if not scored:
        return None
    return (max if higher_is_better else min)(scored, key=lambda layer: layer[measure])


def curve_csv(points: Sequence[dict], measures: Sequence[str]) -> str:
    """Long format: one row per (point, layer, measure)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["iteration", "updates", "total_updates", "layer_index", "layer", "measure", "value"])
    for point in points:
        writer.writerow([point["iteration"], point["updates"], point["total_updates"], "", "", "targets_pnmi",
                         point["targets_pnmi"]])
        for layer in point["layers"]:
            for measure in measures:
                if measure in layer:
                    writer.writerow([point["iteration"], point["updates"], point["total_updates"], layer["index"],
                                     layer["name"], measure, layer[measure]])
    return out.getvalue()


def plot_curve(path: str, title: str, points: Sequence[dict], inputs: Optional[dict] = None):
    """Phone accuracy of every layer, the top block's input likeness and the targets' PNMI against the
    updates from the start of the schedule; iteration boundaries dotted, the inputs' phone accuracy dashed."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    names = [layer["name"] for layer in points[0]["layers"]] if points else []
    x = [point["total_updates"] for point in points]
    for name in names:
        values = [next((l.get("phone_acc") for l in p["layers"] if l["name"] == name), None) for p in points]
        if any(v is not None for v in values):
            axes[0].plot(x, [float("nan") if v is None else v for v in values], "-o", markersize=3, label=name)
    for (name, scores), style in zip((inputs or {}).items(), ("--", "-.")):
        if scores.get("phone_acc") is not None:
            axes[0].axhline(scores["phone_acc"], color="black", linestyle=style, linewidth=0.8, label=name)
    axes[0].set_title("phone probe frame accuracy", fontsize=10)
    axes[1].plot(x, [p["layers"][-1].get("input_cka") for p in points], "-o", markersize=3, color="tab:red")
    axes[1].set_title(f"input likeness of the top block ({names[-1] if names else ''})", fontsize=10)
    for iteration in dict.fromkeys(p["iteration"] for p in points):  # each iteration's targets, start to end
        mine = [p for p in points if p["iteration"] == iteration]
        if mine[0]["targets_pnmi"] is not None:
            axes[2].hlines(mine[0]["targets_pnmi"], mine[0]["total_updates"] - mine[0]["updates"],
                           mine[-1]["total_updates"], color="tab:orange")
    axes[2].set_title("PNMI of the targets trained on", fontsize=10)
    ends = sorted({p["total_updates"] for p in points if p["updates"] == _last_updates(points, p["iteration"])})
    for axis in axes:
        for end in ends[:-1]:
            axis.axvline(end, color="grey", linestyle=":", linewidth=0.8)
        axis.set_xlabel("updates from the start of the schedule")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _last_updates(points: Sequence[dict], iteration: str) -> int:
    return max(p["updates"] for p in points if p["iteration"] == iteration)


# ---------------------------------------------------------------------------------------------- across runs
BEST = "phone_acc"  # the quality the comparison follows: the best layer's phone probe accuracy


def run_label(summary: dict, summaries: Sequence[dict]) -> str:
    """The schedule's name; when other runs of the same schedule are compared, with the seed (or, if the
    seeds are the same too, the run folder's name)."""
    same = [other for other in summaries if other["schedule"] == summary["schedule"]]
    if len(same) == 1:
        return summary["schedule"]
    if len({other.get("seed") for other in same}) == len(same):
        return f"{summary['schedule']} (seed {summary.get('seed')})"
    return f"{summary['schedule']} ({os.path.basename(summary['run_dir'])})"


def groups_of(summaries: Sequence[dict]) -> Dict[str, List[dict]]:
    """Runs with a curve, by schedule name (the seeds of one schedule together), in the order given."""
    groups: Dict[str, List[dict]] = {}
    for summary in summaries:
        if summary.get("curve"):
            groups.setdefault(summary["schedule"], []).append(summary)
    return groups


def series(summary: dict, value: Callable[[dict], Optional[float]]) -> Dict[int, float]:
    """{total_updates: value(point)} of one run's curve (points without a value left out)."""
    return {p["total_updates"]: value(p) for p in summary["curve"] if value(p) is not None}


def best_value(point: dict) -> Optional[float]:
    best = best_layer(point["layers"], BEST)
    return best[BEST] if best else None


def top_likeness(point: dict) -> Optional[float]:
    return point["layers"][-1].get("input_cka")


def mean_std(values: Sequence[float]) -> Tuple[float, Optional[float]]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def mean_series(runs: Sequence[dict], value: Callable[[dict], Optional[float]]) -> Dict[int, Tuple[float, Optional[float]]]:
    """{total_updates: (mean, std) over the runs} at the points every run has."""
    per_run = [series(run, value) for run in runs]
    common = sorted(set.intersection(*(set(s) for s in per_run))) if per_run else []
    return {updates: mean_std([s[updates] for s in per_run]) for updates in common}


def first_reaching(curve: Dict[int, float], level: float) -> Optional[int]:
    """The first total_updates at which ``curve`` reaches ``level`` (None if it never does)."""
    return next((updates for updates in sorted(curve) if curve[updates] >= level), None)


def _pm(mean: float, std: Optional[float]) -> str:
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def comparison_markdown(summaries: Sequence[dict]) -> List[str]:
    """Along training, mean ± std over each schedule's seeds: final quality, the updates each seed of one
    schedule needs to reach another schedule's mean final quality, and the top block's input likeness at the
    start and end of every iteration (the "autoencoder behaviour" watch)."""
    groups = groups_of(summaries)
    if not groups:
        return []
    lines = ["## Along training (mean ± std over seeds)", "",
             "Quality = the best layer's phone probe frame accuracy at each analysed checkpoint.", ""]
    header = ["schedule", "seeds", "updates", "final quality", "final top-block input likeness"]
    rows = []
    for name, runs in groups.items():
        ends = [run["curve"][-1] for run in runs]
        rows.append([name, ", ".join(str(run.get("seed")) for run in runs), str(ends[0]["total_updates"]),
                     _pm(*mean_std([best_value(end) for end in ends])),
                     _pm(*mean_std([top_likeness(end) for end in ends]))])
    lines += markdown.table(header, rows) + [""]
    for name, runs in groups.items():
        for other, other_runs in groups.items():
            if other == name:
                continue
            level = statistics.mean(best_value(run["curve"][-1]) for run in other_runs)
            reached = [first_reaching(series(run, best_value), level) for run in runs]
            shown = ", ".join(f"seed {run.get('seed')}: {'not reached' if r is None else r}"
                              for run, r in zip(runs, reached))
            lines.append(f"- {name} reaches {other}'s mean final quality ({level:.3f}) at updates: {shown} "
                         f"(of {runs[0]['curve'][-1]['total_updates']}).")
    lines += ["", "Top block's input likeness (CKA with log-mel) at the first and last analysed checkpoint of "
                  "each iteration (mean over seeds):", ""]
    header = ["schedule", "iteration", "updates", "first", "last"]
    rows = []
    for name, runs in groups.items():
        for iteration in dict.fromkeys(p["iteration"] for p in runs[0]["curve"]):
            per_run = [[p for p in run["curve"] if p["iteration"] == iteration] for run in runs]
            rows.append([name, iteration, f"{per_run[0][0]['total_updates']} → {per_run[0][-1]['total_updates']}",
                         _pm(*mean_std([top_likeness(mine[0]) for mine in per_run])),
                         _pm(*mean_std([top_likeness(mine[-1]) for mine in per_run]))])
    return lines + markdown.table(header, rows) + [""]


def comparison_csv(summaries: Sequence[dict]) -> str:
    """Every run's curve (best layer and every layer), long format with the schedule and seed."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["schedule", "seed", "iteration", "updates", "total_updates", "layer", "measure", "value"])
    for summary in summaries:
        for point in summary.get("curve") or []:
            key = [summary["schedule"], summary.get("seed"), point["iteration"], point["updates"],
                   point["total_updates"]]
            writer.writerow(key + ["", "targets_pnmi", point["targets_pnmi"]])
            best = best_layer(point["layers"], BEST)
            if best:
                writer.writerow(key + [best["name"], f"best_{BEST}", best[BEST]])
            for layer in point["layers"]:
                for measure in ("phone_acc", "input_cka"):
                    if layer.get(measure) is not None:
                        writer.writerow(key + [layer["name"], measure, layer[measure]])
    return out.getvalue()


def plot_comparison(path: str, summaries: Sequence[dict], inputs: Optional[dict] = None):
    """Mean ± std over seeds along the updates: the best layer's phone accuracy, the top block's input
    likeness; each seed as a thin line."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for (name, runs), color in zip(groups_of(summaries).items(), ("tab:blue", "tab:orange", "tab:green", "tab:red")):
        for axis, value in zip(axes, (best_value, top_likeness)):
            for run in runs:
                points = series(run, value)
                axis.plot(list(points), list(points.values()), color=color, alpha=0.35, linewidth=0.8)
            means = mean_series(runs, value)
            x = list(means)
            mean = [m for m, _ in means.values()]
            std = [s or 0.0 for _, s in means.values()]
            axis.plot(x, mean, "-o", color=color, markersize=3, label=f"{name} ({len(runs)} seeds)")
            axis.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                              color=color, alpha=0.15)
    for (name, scores), style in zip((inputs or {}).items(), ("--", "-.")):
        if scores.get(BEST) is not None:
            axes[0].axhline(scores[BEST], color="black", linestyle=style, linewidth=0.8, label=name)
    axes[0].set_title("phone probe accuracy, best layer", fontsize=10)
    axes[1].set_title("input likeness of the top block", fontsize=10)
    for axis in axes:
        axis.set_xlabel("updates from the start of the schedule")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

