"""One layer-wise analysis run (``laser-analyze-layers`` / scripts/analyze_layers.py): checkpoint A, optionally
checkpoint B on the same utterances, and the output files. See docs/analysis.md.

Output files in the run's folder: ``layers.csv``, ``layers.md``, ``layers.png`` (+ ``deltas.png`` with B) and
``summary.json``; with ABX, the item file fastabx read (``SPLIT.item``).
"""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

from ..files import write_text
from ..models.trained_upstream import OpenedUpstream, open_upstream
from . import abx, report
from .layerwise import analyze_upstream

OUTPUT_FILES = {"csv": "layers.csv", "markdown": "layers.md", "plot": "layers.png", "summary": "summary.json"}
DELTA_PLOT = "deltas.png"


def checkpoint_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def output_paths(out_dir: str, comparing: bool) -> Dict[str, str]:
    """Key ("csv", "markdown", "plot", "summary", and "delta_plot" when comparing) -> path in ``out_dir``."""
    files = {key: os.path.join(out_dir, name) for key, name in OUTPUT_FILES.items()}
    if comparing:
        files["delta_plot"] = os.path.join(out_dir, DELTA_PLOT)
    return files


def describe(opened: OpenedUpstream) -> str:
    """One line on what the checkpoint is (the report's header)."""
    kind = opened.upstream.kind
    if opened.laser_checkpoint is None:
        return f"{kind}, original checkpoint, {opened.upstream.num_layers} blocks"
    return (
        f"{kind}, LASER checkpoint: {opened.trainable_layers} trained top blocks, {opened.num_updates} updates, "
        f"upstream {opened.source_path}"
    )


def analyze_checkpoint(path: str, label: str, *, upstream_path: Optional[str], device: str, seed: int,
                       utterance_set, perturber, phones, progress: Callable, log: Callable[[str], None],
                       abx_split=None, item_path: Optional[str] = None) -> report.LabelledAnalysis:
    """Every layer's measures of the checkpoint at ``path`` (``label`` "A" or "B") on ``utterance_set``;
    ``phones`` = (probe labels or None, why missing); with ``abx_split`` also the ABX of every layer, its item
    file written to ``item_path``."""
    log(f"[{label}] opening {path}")
    opened = open_upstream(path, upstream_path)
    upstream = opened.upstream.to(device).eval()
    phone_labels, phone_labels_missing = phones
    collector = abx.LayerFrameCollector(abx_split) if abx_split is not None else None
    analysis = analyze_upstream(
        upstream, utterance_set, perturber, seed, device, progress=progress,
        phone_labels=phone_labels, phone_labels_missing=phone_labels_missing, each_utterance=collector,
    )
    if collector is not None:
        log(f"[{label}] ABX of {len(analysis.layers)} layers (fastabx)")
        os.makedirs(os.path.dirname(item_path) or ".", exist_ok=True)
        abx.add_layer_abx(analysis.layers, collector, item_path)
    return report.LabelledAnalysis(f"{label}: {checkpoint_name(path)}", path, describe(opened), analysis)


def write_outputs(files: Dict[str, str], main_analysis: report.LabelledAnalysis,
                  compare: Optional[report.LabelledAnalysis], settings: dict) -> None:
    """The report files of ``output_paths`` (``settings``: the run's options, recorded in the summary)."""
    os.makedirs(os.path.dirname(files["csv"]) or ".", exist_ok=True)
    report.write_csv(files["csv"], main_analysis, compare)
    write_text(files["markdown"], report.markdown_report(main_analysis, compare, settings))
    report.plot_measures(files["plot"], main_analysis, compare)
    if compare is not None:
        report.plot_deltas(files["delta_plot"], main_analysis, compare)
    report.write_summary(files["summary"], main_analysis, compare, settings, files)
