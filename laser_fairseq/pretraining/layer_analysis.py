"""The layer analysis of one pretrained checkpoint, and a random model of the same shape as a baseline.

Runs ``analysis.layerwise.analyze_upstream`` on the run's copy of a split, with the phone probe when the
corpus has frame labels (``{split}.phn``, ``dict.phn.txt``, and ``train.tsv`` + ``train.phn`` to train it, all
beside the manifest), and keeps every per-layer value it returns (``dataclasses.asdict`` of its results), so
measures added there later reach the pretraining report without changes here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

from ..analysis import report as analysis_report
from ..analysis.features import make_perturber
from ..analysis.layerwise import analyze_upstream
from ..analysis.phone_labels import load_phone_probe_labels
from ..analysis.utterances import load_utterances
from ..checkpoint_io import load_checkpoint, write_checkpoint
from ..models.trained_upstream import open_upstream
from ..files import write_json, write_text
from .input_baselines import input_phone_scores
from .schedule import AnalysisSettings
from .training import fresh_model, pretrained_checkpoint

ANALYSIS_JSON = "analysis.json"
LAYERS_CSV = "layers.csv"
LAYERS_MD = "layers.md"


def analyze_checkpoint(model_path: str, data_dir: str, settings: AnalysisSettings, device: str, label: str,
                       out_dir: str, with_inputs: bool = False, source: Optional[str] = None) -> dict:
    """Analyse ``model_path`` on ``data_dir/<split>.tsv``; writes analysis.json, layers.csv, layers.md.

    ``with_inputs``: also the phone probe on log-mel and MFCC frames (``inputs`` in analysis.json);
    ``source``: the checkpoint the reports name (default ``model_path``; e.g. the training checkpoint a
    temporary ``model_path`` was converted from).
    """
    source = source or model_path
    manifest = os.path.join(data_dir, f"{settings.split}.tsv")
    utterances = load_utterances(manifest, max_utterances=settings.max_utterances)
    phone_labels, phone_labels_missing = load_phone_probe_labels(
        utterances, max_train_utterances=settings.probe_train_utterances)
    upstream = open_upstream(model_path).upstream.to(device).eval()
    analysis = analyze_upstream(upstream, utterances, make_perturber(), settings.seed, device,
                                phone_labels=phone_labels, phone_labels_missing=phone_labels_missing)
    record = {key: value for key, value in _plain(dataclasses.asdict(analysis)).items() if key != "perturbations"}
    record["checkpoint"] = source
    record["manifest"] = manifest
    if with_inputs and phone_labels is not None:
        record["inputs"] = _plain(input_phone_scores(phone_labels))
    write_json(os.path.join(out_dir, ANALYSIS_JSON), record)
    labelled = analysis_report.LabelledAnalysis(label, source, label, analysis)
    analysis_report.write_csv(os.path.join(out_dir, LAYERS_CSV), labelled)
    settings_text = {"manifest": manifest, "seed": settings.seed, "speed_factors": "default",
                     "pitch_shifts": "default"}
    write_text(os.path.join(out_dir, LAYERS_MD), analysis_report.markdown_report(labelled, None, settings_text))
    return record


def _plain(value):
    """NaN as None (JSON has no NaN), recursively."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def write_random_model(reference_model: str, seed: int, path: str):
    """A freshly initialised model with the configuration and label dictionaries of ``reference_model``."""
    reference = load_checkpoint(reference_model)
    _, model = fresh_model(reference["cfg"], reference["task_state"]["dictionaries"], seed)
    write_checkpoint(pretrained_checkpoint(dict(reference, model=model.state_dict())), path)
