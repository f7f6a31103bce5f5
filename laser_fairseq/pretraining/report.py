"""Reports of pretraining runs: ``summary.json`` + markdown + CSV + PNG per run, and schedule comparisons.

Per run (``RUN/summary.json``, ``report.md``, ``report.csv``, ``report.png``): every iteration with its final
checkpoint, stage wall times, k-means fit, cluster quality of its targets (PNMI, phone and cluster purity
against ``.phn`` frame phones) and the layer analysis of its model, plus a random model of the same shape;
with a curve (``curve.every``), also the analysis along training (``curve.csv``, ``curve.png`` and a table).
Layer measures are whatever the layer analysis returned (every numeric per-layer field), so new measures
(e.g. a phone probe) appear as new rows and panels without changes here.

A comparison (``compare_runs``) puts several runs side by side: wall time, total updates, PNMI per
iteration, the final model's top-layer input likeness and its per-layer measures.
"""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Callable, Dict, List, Optional, Sequence

from ..analysis.report import CHANCE_OF, TITLES
from ..files import read_json, write_json, write_text
from .. import markdown
from ..plotting import pyplot
from . import curve
from .schedule import Schedule
from .stamps import DONE, read_stamp

SUMMARY = "summary.json"
PRETRAINING_STAGES = ("features", "kmeans", "labels", "train")  # what the wall time of a schedule counts
NON_MEASURES = {"index", "name", "dim"}
INPUT_LIKENESS = "input_cka"
QUALITY_SPLIT = "valid"


# ---------------------------------------------------------------------------------------------- collecting
def collect_run(run_dir: str, schedule: Schedule, stage_dir: Callable[[str, str], str],
                model_path: Callable) -> dict:
    """The run's summary from its stamps and stage outputs (stages not finished yet are left out)."""
    iterations = []
    for iteration in schedule.iterations:
        stamps = {stage: read_stamp(stage_dir(iteration.name, stage)) for stage in
                  ("features", "kmeans", "labels", "train", "analysis")}
        done = {stage: stamp for stage, stamp in stamps.items() if stamp and stamp.get("status") == DONE}
        entry = {
            "iteration": iteration.index,
            "name": iteration.name,
            "target": iteration.target.describe(),
            "n_clusters": iteration.n_clusters,
            "max_update": iteration.max_update,
            "init": iteration.init,
            "status": "done" if "train" in done else "incomplete",
            "checkpoint": model_path(iteration) if "train" in done else None,
            "seconds": {stage: stamp.get("seconds") for stage, stamp in done.items()},
            "kmeans": done["kmeans"].get("record") if "kmeans" in done else None,
            "valid": done["train"].get("record", {}).get("valid") if "train" in done else None,
            "cluster_quality": done["labels"]["record"].get("quality") if "labels" in done else None,
            "layers": _layers(stage_dir(iteration.name, "analysis")) if "analysis" in done else None,
            "chance": _chance(stage_dir(iteration.name, "analysis")) if "analysis" in done else None,
        }
        entry["pretraining_seconds"] = round(sum(entry["seconds"].get(s) or 0.0 for s in PRETRAINING_STAGES), 3)
        iterations.append(entry)
    random_dir = stage_dir("random", "analysis")
    random_stamp = read_stamp(random_dir)
    random = None
    if random_stamp and random_stamp.get("status") == DONE:
        random = {"checkpoint": os.path.join(random_dir, "model.pt"), "layers": _layers(random_dir),
                  "chance": _chance(random_dir),
                  "inputs": read_json(os.path.join(random_dir, "analysis.json")).get("inputs")}
    data_stamp = read_stamp(os.path.join(run_dir, "data")) or {}
    pnmi = {entry["name"]: (_quality(entry) or {}).get("pnmi") for entry in iterations}
    points = curve.collect_points(schedule, stage_dir, lambda name: _done_stamp(stage_dir, name), pnmi.get)
    return {
        "schedule": schedule.name,
        "schedule_path": schedule.path,
        "seed": schedule.seed,
        "run_dir": run_dir,
        "data": data_stamp.get("settings", {}).get("source"),
        "scheduled_updates": schedule.total_updates,
        "completed_updates": sum(i["max_update"] for i in iterations if i["status"] == "done"),
        "pretraining_seconds": round(sum(i["pretraining_seconds"] for i in iterations), 3),
        "data_seconds": data_stamp.get("seconds"),
        "iterations": iterations,
        "random": random,
        "curve_every": schedule.curve.every,
        "curve": points,
    }


def _done_stamp(stage_dir: Callable[[str, str], str], stage_name: str) -> Optional[dict]:
    stamp = read_stamp(stage_dir(*stage_name.split(".")))
    return stamp if stamp and stamp.get("status") == DONE else None


def _layers(analysis_dir: str) -> List[dict]:
    return read_json(os.path.join(analysis_dir, "analysis.json"))["layers"]


def _chance(analysis_dir: str) -> Dict[str, Optional[float]]:
    """Chance level of each measure that has one (e.g. majority-class phone accuracy)."""
    record = read_json(os.path.join(analysis_dir, "analysis.json"))
    return {measure: record.get(field) for measure, field in CHANCE_OF.items()}


def measures_of(layers: Optional[Sequence[dict]]) -> List[str]:
    """Numeric per-layer fields that some layer has a value of, in the order the analysis returned them (a
    measure the analysis did not take, e.g. ABX without --abx, is None in every layer and left out)."""
    names: List[str] = []
    for layer in layers or []:
        for key, value in layer.items():
            if key not in NON_MEASURES and key not in names and (value is None or isinstance(value, (int, float))):
                names.append(key)
    return [name for name in names if any(isinstance(layer.get(name), (int, float)) for layer in layers)]


def phone_measures(measures: Sequence[str]) -> List[str]:
    return [name for name in measures if name.startswith("phone")]


def _columns(summary: dict) -> List[tuple]:
    """(label, layers) of the random model and every analysed iteration."""
    columns = []
    if summary.get("random"):
        columns.append(("random", summary["random"]["layers"]))
    columns += [(entry["name"], entry["layers"]) for entry in summary["iterations"] if entry["layers"]]
    return columns


def _quality(entry: dict) -> Optional[dict]:
    quality = entry.get("cluster_quality") or {}
    return quality.get(QUALITY_SPLIT) or next(iter(quality.values()), None)


# ---------------------------------------------------------------------------------------------- run report
def write_run_report(run_dir: str, summary: dict):
    write_json(os.path.join(run_dir, SUMMARY), summary)
    write_text(os.path.join(run_dir, "report.md"), run_markdown(summary))
    write_text(os.path.join(run_dir, "report.csv"), run_csv(summary))
    columns = _columns(summary)
    if columns:
        plot_run(os.path.join(run_dir, "report.png"), summary)
    if summary.get("curve"):
        measures = measures_of([layer for point in summary["curve"] for layer in point["layers"]])
        write_text(os.path.join(run_dir, "curve.csv"), curve.curve_csv(summary["curve"], measures))
        curve.plot_curve(os.path.join(run_dir, "curve.png"), f"{summary['schedule']}: quality along training",
                         summary["curve"], (summary.get("random") or {}).get("inputs"))


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)



def iteration_rows(summary: dict) -> List[List[str]]:
    rows = []
    for entry in summary["iterations"]:
        quality = _quality(entry) or {}
        kmeans = entry.get("kmeans") or {}
        valid = entry.get("valid") or {}
        rows.append([
            entry["name"], entry["target"], str(entry["n_clusters"]), str(entry["max_update"]), entry["init"],
            _fmt(quality.get("pnmi")), _fmt(quality.get("phone_purity")), _fmt(quality.get("cluster_purity")),
            _fmt(valid.get("correct_m_0")),
            _fmt(kmeans.get("fit_seconds"), 1), _fmt(entry["seconds"].get("train"), 1),
            _fmt(entry["pretraining_seconds"], 1), entry["status"],
        ])
    return rows


ITERATION_HEADER = ["iteration", "targets", "clusters", "updates", "init", f"PNMI ({QUALITY_SPLIT})",
                    "phone purity", "cluster purity", "masked acc", "k-means fit s", "train s", "pretraining s",
                    "status"]


def run_markdown(summary: dict) -> str:
    lines = [f"# HuBERT pretraining run: {summary['schedule']}", ""]
    lines.append(f"- schedule: `{summary['schedule_path']}`; data: `{summary['data']}`; run: `{summary['run_dir']}`")
    lines.append(f"- updates: {summary['completed_updates']} of {summary['scheduled_updates']} done; pretraining wall "
                 f"time (features, k-means, labels, training): {_fmt(summary['pretraining_seconds'], 1)} s")
    lines += ["", "## Iterations", ""]
    lines += markdown.table(ITERATION_HEADER, iteration_rows(summary))
    lines += ["", "Cluster quality of each iteration's k-means targets against the frame phone labels "
                  f"(`{QUALITY_SPLIT}.phn`; n/a when the corpus has none); masked acc: the trained model's accuracy "
                  "in predicting the targets of masked frames at its last validation.", ""]
    columns = _columns(summary)
    measures = measures_of([layer for _, layers in columns for layer in layers])
    chance = next((entry["chance"] for entry in [summary.get("random"), *summary["iterations"]]
                   if entry and entry.get("chance")), {})
    for measure in measures:
        lines += [f"## {TITLES.get(measure, measure)} (`{measure}`), layer x iteration", ""]
        lines += markdown.table(["layer", *[label for label, _ in columns]], _layer_rows(columns, measure))
        if chance.get(measure) is not None:
            lines += ["", f"Chance level: {_fmt(chance[measure])}."]
        lines += _input_line(summary, measure)
        lines.append("")
    if summary.get("curve"):
        lines += curve_markdown(summary) + [""]
    checkpoints = [(entry["name"], entry["checkpoint"]) for entry in summary["iterations"] if entry["checkpoint"]]
    if checkpoints:
        lines += ["## Checkpoints", ""] + [f"- {name}: `{path}`" for name, path in checkpoints] + [""]
    return "\n".join(lines)


def curve_markdown(summary: dict) -> List[str]:
    """The curve as a table: per point the best layer's and the top block's phone accuracy, the top block's
    input likeness and the PNMI of the targets trained on."""
    rows = []
    for point in summary["curve"]:
        best = curve.best_layer(point["layers"], "phone_acc")
        top = point["layers"][-1]
        rows.append([point["iteration"], str(point["updates"]), str(point["total_updates"]),
                     f"{_fmt(best['phone_acc'])} ({best['name']})" if best else "n/a", _fmt(top.get("phone_acc")),
                     _fmt(top.get(INPUT_LIKENESS)), _fmt(point["targets_pnmi"])])
    header = ["iteration", "updates", "total updates", "phone acc, best layer", "phone acc, top block",
              "top block input likeness", "targets PNMI"]
    return [f"## Along training (every {summary['curve_every']} updates)", "", *markdown.table(header, rows), "",
            "Every point is the layer analysis of the checkpoint fairseq kept at that update (the last point of an "
            "iteration is its final model); `curve.csv` has every layer and measure, `curve.png` the curves."]


def _layer_rows(columns: List[tuple], measure: str) -> List[List[str]]:
    names = []
    for _, layers in columns:
        names += [layer["name"] for layer in layers if layer["name"] not in names]
    rows = []
    for name in names:
        row = [name]
        for _, layers in columns:
            layer = next((item for item in layers if item["name"] == name), None)
            row.append(_fmt(layer.get(measure) if layer else None))
        rows.append(row)
    return rows


def _input_line(summary: dict, measure: str) -> List[str]:
    """The same probe on the model inputs (log-mel, MFCC), when the run measured them."""
    inputs = (summary.get("random") or {}).get("inputs") or {}
    values = [(name, scores.get(measure)) for name, scores in inputs.items() if scores.get(measure) is not None]
    if not values:
        return []
    return ["", "Same probe on the inputs: " + ", ".join(f"{INPUT_NAMES.get(n, n)} {_fmt(v)}" for n, v in values) + "."]


INPUT_NAMES = {"log_mel": "log-mel (80-d)", "mfcc": "MFCC (39-d)"}


def run_csv(summary: dict) -> str:
    """Long format: one row per (model, layer, measure); iteration-level values have an empty layer."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["model", "layer_index", "layer", "measure", "value"])
    for entry in summary["iterations"]:
        for name, value in (_quality(entry) or {}).items():
            writer.writerow([entry["name"], "", "", f"targets_{name}", value])
        for stage, seconds in entry["seconds"].items():
            writer.writerow([entry["name"], "", "", f"seconds_{stage}", seconds])
    for label, layers in _columns(summary):
        for layer in layers:
            for measure in measures_of([layer]):
                writer.writerow([label, layer["index"], layer["name"], measure, layer.get(measure)])
    for name, scores in ((summary.get("random") or {}).get("inputs") or {}).items():
        for measure, value in scores.items():
            writer.writerow([name, "", "input", measure, value])
    return out.getvalue()


def plot_run(path: str, summary: dict):
    """Layer x model heatmaps of input likeness and phone measures (when present), and PNMI per iteration."""
    plt = pyplot()
    columns = _columns(summary)
    measures = measures_of([layer for _, layers in columns for layer in layers])
    shown = [m for m in [INPUT_LIKENESS, *phone_measures(measures)] if m in measures] or measures[:1]
    figure, axes = plt.subplots(1, len(shown) + 1, figsize=(4.5 * (len(shown) + 1), 5))
    for axis, measure in zip(axes, shown):
        _heatmap(axis, columns, measure)
    _pnmi_bars(axes[-1], summary)
    figure.suptitle(f"{summary['schedule']}: layer x iteration")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _heatmap(axis, columns: List[tuple], measure: str):
    import numpy as np

    rows = _layer_rows(columns, measure)
    values = np.array([[float(cell) if cell != "n/a" else np.nan for cell in row[1:]] for row in rows])
    image = axis.imshow(values, aspect="auto", cmap="viridis", origin="lower")
    axis.set_xticks(range(len(columns)))
    axis.set_xticklabels([label for label, _ in columns], rotation=45, fontsize=8)
    axis.set_yticks(range(len(rows)))
    axis.set_yticklabels([row[0] for row in rows], fontsize=8)
    for (i, j), value in np.ndenumerate(values):
        if not np.isnan(value):
            axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="white")
    axis.set_title(TITLES.get(measure, measure), fontsize=10)
    axis.figure.colorbar(image, ax=axis, fraction=0.046)


def _pnmi_bars(axis, summary: dict):
    entries = [(entry["name"], (_quality(entry) or {}).get("pnmi")) for entry in summary["iterations"]]
    entries = [(name, value) for name, value in entries if value is not None]
    if entries:
        axis.bar(range(len(entries)), [value for _, value in entries], color="tab:orange")
        axis.set_xticks(range(len(entries)))
        axis.set_xticklabels([name for name, _ in entries], fontsize=8)
    else:
        axis.text(0.5, 0.5, "no phone labels", transform=axis.transAxes, ha="center", color="grey")
    axis.set_title(f"PNMI of the targets ({QUALITY_SPLIT})", fontsize=10)
    axis.set_ylim(0, 1)



# ---------------------------------------------------------------------------------------------- comparison
def load_summary(run_dir: str) -> dict:
    path = os.path.join(run_dir, SUMMARY)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no summary; run scripts/pretrain_hubert.py with --out {run_dir} first")
    return read_json(path)


def final_layers(summary: dict) -> Optional[List[dict]]:
    analysed = [entry for entry in summary["iterations"] if entry["layers"]]
    return analysed[-1]["layers"] if analysed else None


def compare_markdown(summaries: Sequence[dict], command: str = "") -> str:
    lines = ["# Pretraining schedules compared", ""]
    if command:
        # the marker lets the project's doc test check the command (tests/doc_blocks.py)
        lines += ["Produced by:", "", "<!-- run: syntax -->", "```bash", command, "```", ""]
    updates = {summary["completed_updates"] for summary in summaries}
    if len(updates) > 1:
        lines += [f"**Warning: the runs did not do the same number of updates ({sorted(updates)}).**", ""]
    header = ["schedule", "iterations", "updates", "pretraining wall s", "PNMI per iteration", "top-layer input CKA"]
    rows = []
    for summary in summaries:
        layers = final_layers(summary) or []
        top = layers[-1].get(INPUT_LIKENESS) if layers else None
        pnmi = ", ".join(_fmt((_quality(entry) or {}).get("pnmi")) for entry in summary["iterations"])
        rows.append([curve.run_label(summary, summaries), str(len(summary["iterations"])), str(summary["completed_updates"]),
                     _fmt(summary["pretraining_seconds"], 1), pnmi, _fmt(top)])
    lines += markdown.table(header, rows) + [""]
    columns = []
    if summaries and summaries[0].get("random"):
        columns.append(("random", summaries[0]["random"]["layers"]))
    columns += [(curve.run_label(summary, summaries), final_layers(summary) or []) for summary in summaries]
    measures = measures_of([layer for _, layers in columns for layer in layers])
    for measure in measures:
        lines += [f"## Final model: {TITLES.get(measure, measure)} (`{measure}`) per layer", ""]
        lines += markdown.table(["layer", *[label for label, _ in columns]], _layer_rows(columns, measure))
        lines += _input_line(summaries[0], measure) + [""]
    lines += ["Wall time counts features, k-means, labels and training (not the analysis). `random` is a "
              "randomly initialised model of the first schedule's shape.", ""]
    lines += curve.comparison_markdown(summaries)
    return "\n".join(lines)


def compare_csv(summaries: Sequence[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["schedule", "model", "layer_index", "layer", "measure", "value"])
    for summary in summaries:
        writer.writerow([curve.run_label(summary, summaries), "", "", "", "pretraining_seconds", summary["pretraining_seconds"]])
        writer.writerow([curve.run_label(summary, summaries), "", "", "", "updates", summary["completed_updates"]])
        for entry in summary["iterations"]:
            writer.writerow([curve.run_label(summary, summaries), entry["name"], "", "", "targets_pnmi",
                             (_quality(entry) or {}).get("pnmi")])
        for layer in final_layers(summary) or []:
            for measure in measures_of([layer]):
                writer.writerow([curve.run_label(summary, summaries), "final", layer["index"], layer["name"], measure,
                                 layer.get(measure)])
    return out.getvalue()


def plot_comparison(path: str, summaries: Sequence[dict]):
    """Per-layer curves of the final models (input likeness, phone measures) and PNMI per iteration."""
    plt = pyplot()
    measures = measures_of([layer for summary in summaries for layer in final_layers(summary) or []])
    shown = [m for m in [INPUT_LIKENESS, *phone_measures(measures)] if m in measures]
    figure, axes = plt.subplots(1, len(shown) + 1, figsize=(5 * (len(shown) + 1), 4.5))
    axes = list(axes) if len(shown) else [axes]
    for axis, measure in zip(axes, shown):
        for summary in summaries:
            layers = final_layers(summary) or []
            points = [(layer["index"], layer.get(measure)) for layer in layers if layer.get(measure) is not None]
            if points:
                axis.plot(*zip(*points), "-o", label=curve.run_label(summary, summaries))
            names = [layer["name"] for layer in layers]
        random = summaries[0].get("random") if summaries else None
        if random:
            points = [(layer["index"], layer.get(measure)) for layer in random["layers"] if layer.get(measure) is not None]
            if points:
                axis.plot(*zip(*points), ":", color="grey", label="random")
            for (name, scores), style in zip((random.get("inputs") or {}).items(), ("--", "-.")):
                if scores.get(measure) is not None:
                    axis.axhline(scores[measure], color="black", linestyle=style, linewidth=0.8,
                                 label=INPUT_NAMES.get(name, name))
        axis.set_xticks(range(len(names)))
        axis.set_xticklabels(names, rotation=45, fontsize=7)
        axis.set_title(TITLES.get(measure, measure), fontsize=10)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for summary in summaries:
        values = [(entry["iteration"], (_quality(entry) or {}).get("pnmi")) for entry in summary["iterations"]]
        values = [(i, v) for i, v in values if v is not None]
        if values:
            axes[-1].plot(*zip(*values), "-o", label=curve.run_label(summary, summaries))
    axes[-1].set_xlabel("iteration")
    axes[-1].set_title(f"PNMI of the targets ({QUALITY_SPLIT})", fontsize=10)
    axes[-1].grid(alpha=0.3)
    axes[-1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_comparison(out_dir: str, summaries: Sequence[dict], command: str = "") -> Dict[str, str]:
    files = {name: os.path.join(out_dir, f"comparison.{name}") for name in ("md", "csv", "png")}
    write_text(files["md"], compare_markdown(summaries, command))
    write_text(files["csv"], compare_csv(summaries))
    plot_comparison(files["png"], summaries)
    if curve.groups_of(summaries):
        files.update({f"curve_{name}": os.path.join(out_dir, f"comparison_curve.{name}") for name in ("csv", "png")})
        write_text(files["curve_csv"], curve.comparison_csv(summaries))
        curve.plot_comparison(files["curve_png"], summaries, (summaries[0].get("random") or {}).get("inputs"))
    return files
