"""Writing layer-wise analyses: CSV, markdown table, PNG plots, JSON summary.

A report holds one analysis (checkpoint A) or two (A and the ``--compare`` checkpoint B). Rows are
matched by layer name; B - A is the per-layer delta. Values that are not available are written ``n/a``.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from typing import Dict, List, Optional

from .. import markdown
from ..plotting import pyplot
from .layerwise import ABX_MEASURES, MEASURES, LayerResult, UpstreamAnalysis

NOT_AVAILABLE = "n/a"

TITLES = {
    "input_cka": "input likeness (CKA with log-mel)",
    "invariance": "perturbation invariance (DTW cosine)",
    "voice_probe": "voice probe accuracy",
    "retrieval_map": "cross-voice retrieval MAP",
    "phone_acc": "phone probe frame accuracy",
    "phone_per": "phone probe PER (lower is better)",
    "abx_within": "ABX within voices, % (lower is better)",
    "abx_across": "ABX across voices, % (lower is better)",
}
SHORT = {"input_cka": "CKA", "invariance": "invariance", "voice_probe": "voice", "retrieval_map": "MAP",
         "phone_acc": "phone acc", "phone_per": "PER", "abx_within": "ABX within", "abx_across": "ABX across"}
CHANCE_OF = {"voice_probe": "voice_probe_chance", "retrieval_map": "retrieval_chance",
             "phone_acc": "phone_acc_chance", "phone_per": "phone_per_chance"}


@dataclass
class LabelledAnalysis:
    label: str  # short name for tables and legends
    checkpoint: str  # the file analysed
    description: str  # e.g. "hubert, LASER checkpoint after 3600 updates"
    analysis: UpstreamAnalysis

    def layer(self, name: str) -> Optional[LayerResult]:
        return next((layer for layer in self.analysis.layers if layer.name == name), None)


def measures_of(main: LabelledAnalysis, compare: Optional[LabelledAnalysis] = None) -> tuple:
    """The reported measures: MEASURES, and the ABX ones when a layer of A or B has them."""
    layers = main.analysis.layers + (compare.analysis.layers if compare is not None else [])
    with_abx = any(layer.abx_within is not None for layer in layers)
    return MEASURES + (ABX_MEASURES if with_abx else ())


def layer_order(main: LabelledAnalysis, compare: Optional[LabelledAnalysis]) -> List[str]:
    """A's layer names, then any deeper ones of B."""
    names = [layer.name for layer in main.analysis.layers]
    if compare is not None:
        names += [layer.name for layer in compare.analysis.layers if layer.name not in names]
    return names


def _value(result: Optional[LayerResult], measure: str) -> Optional[float]:
    if result is None:
        return None
    value = result.value(measure)
    return None if value is None or math.isnan(value) else float(value)


def delta(main: LabelledAnalysis, compare: LabelledAnalysis, name: str, measure: str) -> Optional[float]:
    """B - A for one layer and measure; None if either is not available."""
    a, b = _value(main.layer(name), measure), _value(compare.layer(name), measure)
    return None if a is None or b is None else b - a


def _cell(value: Optional[float], signed: bool = False) -> str:
    if value is None:
        return NOT_AVAILABLE
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def table_rows(main: LabelledAnalysis, compare: Optional[LabelledAnalysis] = None) -> List[Dict[str, str]]:
    """One dict per layer with the CSV columns (all values formatted, ``n/a`` where not available)."""
    rows = []
    for index, name in enumerate(layer_order(main, compare)):
        a = main.layer(name)
        row = {"index": str(index), "layer": name, "dim": str(a.dim) if a else NOT_AVAILABLE}
        for measure in measures_of(main, compare):
            row[measure] = _cell(_value(a, measure))
            if measure in CHANCE_OF:
                row[CHANCE_OF[measure]] = _cell(getattr(main.analysis, CHANCE_OF[measure]))
        if compare is not None:
            b = compare.layer(name)
            row["compare_dim"] = str(b.dim) if b else NOT_AVAILABLE
            for measure in measures_of(main, compare):
                row[f"compare_{measure}"] = _cell(_value(b, measure))
            for measure in measures_of(main, compare):
                row[f"delta_{measure}"] = _cell(delta(main, compare, name, measure), signed=True)
        rows.append(row)
    return rows


def write_csv(path: str, main: LabelledAnalysis, compare: Optional[LabelledAnalysis] = None):
    rows = table_rows(main, compare)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(main: LabelledAnalysis, compare: Optional[LabelledAnalysis] = None) -> str:
    """The per-layer table; with ``compare``, columns A, B and B - A for each measure."""
    header = ["layer"]
    for measure in measures_of(main, compare):
        header += [SHORT[measure]] if compare is None else [f"{SHORT[measure]} A", f"{SHORT[measure]} B", "Δ"]
    rows = []
    for row in table_rows(main, compare):
        cells = [row["layer"]]
        for measure in measures_of(main, compare):
            cells.append(row[measure])
            if compare is not None:
                cells += [row[f"compare_{measure}"], row[f"delta_{measure}"]]
        rows.append(cells)
    return "\n".join(markdown.table(header, rows))


def markdown_report(main: LabelledAnalysis, compare: Optional[LabelledAnalysis], settings: dict) -> str:
    """The table with what was compared, on what, the chance levels and anything not available."""
    analysis = main.analysis
    lines = ["# Layer-wise analysis", ""]
    lines.append(f"- A: `{main.checkpoint}` ({main.description})")
    if compare is not None:
        lines.append(f"- B: `{compare.checkpoint}` ({compare.description}); Δ = B - A")
    lines.append(
        f"- {analysis.utterances} utterances ({analysis.frames} frames) of `{settings['manifest']}`, "
        f"perturbation seed {settings['seed']}, speed factors {settings['speed_factors']}, pitch shifts "
        f"{settings['pitch_shifts']} semitones"
    )
    lines.append(
        f"- chance: voice probe {_cell(analysis.voice_probe_chance)} ({analysis.voice_probe_folds or 'n/a'} "
        f"sentence-held-out folds), retrieval MAP {_cell(analysis.retrieval_chance)} "
        f"({analysis.retrieval_queries or 'n/a'} queries)"
    )
    if analysis.phone_probe:
        lines.append(phone_probe_line(analysis))
    for measure, reason in analysis.unavailable.items():
        lines.append(f"- {measure} not available: {reason}")
    lines += ["", markdown_table(main, compare), ""]
    return "\n".join(lines)


def phone_probe_line(analysis: UpstreamAnalysis) -> str:
    """What the phone probe was trained on and its chance levels, for the markdown header."""
    probe = analysis.phone_probe
    return (
        f"- phone probe: LDA on {probe['train_utterances']} utterances ({probe['train_frames']} frames) of "
        f"`{probe['train_manifest']}`, {probe['classes']} phone classes; chance (always `{probe['majority_class']}`"
        f", the training majority): accuracy {_cell(analysis.phone_acc_chance)}, PER "
        f"{_cell(analysis.phone_per_chance)} on {probe['test_frames']} frames / {probe['test_reference_phones']} "
        f"reference phones"
    )


def _panel_grid(plt, measures):
    """A figure with two columns of panels, one per measure."""
    rows = -(-len(measures) // 2)
    figure, axes = plt.subplots(rows, 2, figsize=(12, 4 * rows), sharex=True)
    return figure, axes


def plot_measures(path: str, main: LabelledAnalysis, compare: Optional[LabelledAnalysis] = None):
    """One panel per measure, layer index on x; A solid, B dashed; chance levels dotted."""
    plt = pyplot()
    names = layer_order(main, compare)
    measures = measures_of(main, compare)
    figure, axes = _panel_grid(plt, measures)
    for axis, measure in zip(axes.flat, measures):
        for labelled, style in ((main, "-o"), (compare, "--s")):
            if labelled is None:
                continue
            points = [(i, _value(labelled.layer(n), measure)) for i, n in enumerate(names)]
            points = [(i, v) for i, v in points if v is not None]
            if points:
                axis.plot(*zip(*points), style, label=labelled.label)
        chance = getattr(main.analysis, CHANCE_OF[measure]) if measure in CHANCE_OF else None
        if chance is not None:
            axis.axhline(chance, color="grey", linestyle=":", label="chance")
        if measure in main.analysis.unavailable:
            axis.text(0.5, 0.5, "not available", transform=axis.transAxes, ha="center", color="grey")
        _decorate(axis, TITLES[measure], names)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    for axis in axes[-1]:
        axis.set_xlabel("layer index")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_deltas(path: str, main: LabelledAnalysis, compare: LabelledAnalysis):
    """One panel of per-layer B - A bars per measure."""
    plt = pyplot()
    names = layer_order(main, compare)
    measures = measures_of(main, compare)
    figure, axes = _panel_grid(plt, measures)
    for axis, measure in zip(axes.flat, measures):
        values = [delta(main, compare, name, measure) for name in names]
        axis.bar(range(len(names)), [0.0 if v is None else v for v in values],
                 color="tab:purple")
        axis.axhline(0.0, color="black", linewidth=0.8)
        if measure in main.analysis.unavailable:
            axis.text(0.5, 0.5, "not available", transform=axis.transAxes, ha="center", color="grey")
        _decorate(axis, f"Δ {TITLES[measure]}\n({compare.label} - {main.label})", names)
    for axis in axes[-1]:
        axis.set_xlabel("layer index")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _decorate(axis, title: str, names: List[str]):
    axis.set_title(title, fontsize=10)
    axis.set_xticks(range(len(names)))
    axis.set_xticklabels([f"{i}\n{n}" for i, n in enumerate(names)], fontsize=7)
    axis.grid(alpha=0.3)



def write_summary(path: str, main: LabelledAnalysis, compare: Optional[LabelledAnalysis], settings: dict,
                  files: Dict[str, str]):
    """Everything needed to reproduce and read the run, as JSON."""

    def describe(labelled: LabelledAnalysis) -> dict:
        analysis = labelled.analysis
        return {
            "label": labelled.label,
            "checkpoint": labelled.checkpoint,
            "description": labelled.description,
            "layers": [_without_nan(layer.__dict__) for layer in analysis.layers],
            "voice_probe_chance": analysis.voice_probe_chance,
            "voice_probe_folds": analysis.voice_probe_folds,
            "retrieval_chance": analysis.retrieval_chance,
            "retrieval_queries": analysis.retrieval_queries,
            "phone_acc_chance": analysis.phone_acc_chance,
            "phone_per_chance": analysis.phone_per_chance,
            "phone_probe": analysis.phone_probe or None,
            "unavailable": analysis.unavailable,
        }

    summary = {
        "settings": settings,
        "utterances": main.analysis.utterances,
        "frames": main.analysis.frames,
        "perturbations": main.analysis.perturbations,
        "main": describe(main),
        "compare": describe(compare) if compare is not None else None,
        "files": files,
    }
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")


def _without_nan(values: dict) -> dict:
    """NaN (e.g. CKA of a constant layer) as null: JSON has no NaN."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in values.items()}
