"""Measuring one model (an original upstream or a LASER training checkpoint) on one split of a corpus.

Per layer: the layer-wise analysis (input likeness, invariance, voice probe, cross-voice retrieval, and the
phone probe when the corpus has frame labels); on the top layer also the collapse indicators. The result is
a JSON-able dict, cached next to the run so a re-run does not measure twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..analysis.collapse import effective_rank, mean_pairwise_cosine
from ..analysis.features import make_perturber
from ..analysis.layerwise import ABX_MEASURES, analyze_upstream
from ..analysis.phone_labels import DEFAULT_PROBE_TRAIN_UTTERANCES, load_phone_probe_labels
from ..analysis.utterances import load_utterances
from ..files import sha256_of, write_json
from ..models.trained_upstream import open_upstream


@dataclass(frozen=True)
class EvalSettings:
    max_utterances: Optional[int] = None  # first N audio lines of the split (None = all)
    probe_train_utterances: int = DEFAULT_PROBE_TRAIN_UTTERANCES  # train.tsv utterances fitting the phone probe
    perturbation_seed: int = 1
    device: str = "cpu"


def evaluate(checkpoint: str, data: str, split: str, settings: EvalSettings, cache: str) -> dict:
    """Measures of ``checkpoint`` on ``data/<split>.tsv``, read from ``cache`` when it holds this exact job."""
    stamp = {
        "checkpoint_sha256": sha256_of(checkpoint),
        "manifest": os.path.join(data, f"{split}.tsv"),
        "settings": dataclasses.asdict(settings),
    }
    if os.path.exists(cache):
        with open(cache, encoding="utf-8") as handle:
            cached = json.load(handle)
        if cached.get("stamp") == stamp:
            return cached
    result = {"stamp": stamp, **measure(checkpoint, stamp["manifest"], settings)}
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    write_json(cache, result, sort_keys=True)
    return result


def measure(checkpoint: str, manifest: str, settings: EvalSettings) -> dict:
    opened = open_upstream(checkpoint)
    upstream = opened.upstream.to(settings.device).eval()
    utterances = load_utterances(manifest, max_utterances=settings.max_utterances)
    phone_labels, phone_labels_missing = load_phone_probe_labels(
        utterances, max_train_utterances=settings.probe_train_utterances
    )
    top_layer: List[np.ndarray] = []  # (T, C) top-layer frames of each original utterance
    analysis = analyze_upstream(
        upstream, utterances, make_perturber(), settings.perturbation_seed, settings.device,
        phone_labels=phone_labels, phone_labels_missing=phone_labels_missing,
        each_utterance=lambda item: top_layer.append(item.frames[-1]),
    )
    layers = {layer.name: _layer_values(layer) for layer in analysis.layers}
    top = analysis.layers[-1].name
    top_frames = np.concatenate(top_layer)
    layers[top]["mean_cosine"] = mean_pairwise_cosine(top_frames)
    layers[top]["effective_rank"] = effective_rank(top_frames)
    chance = {key: value for key, value in dataclasses.asdict(analysis).items() if key.endswith("_chance")}
    return {
        "layers": layers,
        "top_layer": top,
        "chance": chance,
        "unavailable": dict(analysis.unavailable),
        "utterances": analysis.utterances,
        "frames": analysis.frames,
        "laser_checkpoint": opened.laser_checkpoint,
        "num_updates": opened.num_updates,
    }


def _layer_values(layer) -> dict:
    """Every measured value of a LayerResult (the measures present in this version of the analysis)."""
    return {
        key: value for key, value in dataclasses.asdict(layer).items()
        if key not in ("index", "name", "dim", *ABX_MEASURES)  # ABX: yardsticks.abx_of_layers, on named layers
    }
