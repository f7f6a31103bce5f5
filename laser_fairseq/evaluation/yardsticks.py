"""The field's yardsticks of one model of the effect table: SUPERB phone recognition (s3prl's recipe,
:mod:`.superb_pr`) and triphone ABX (fastabx, :mod:`..analysis.abx`) of named layers.

Both are cached in the model's measures folder (``measures/<run>/``, see :mod:`.study`), so a finished study
re-run with these columns trains no LASER model again:

    superb_pr/seed<k>/   one SUPERB-PR run (result.json): the probe trained once with seed k, tested on each
                         eval split it was asked for (a later split is only tested, not trained again)
    abx_<split>.json     ABX within / across voices of each layer measured so far on that split
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from ..analysis import abx
from ..files import read_json, sha256_of, write_json
from ..models.trained_upstream import open_upstream
from .superb_pr import run_superb_pr, test_name


@dataclass(frozen=True)
class YardstickSettings:
    superb_pr: bool = True
    superb_pr_preset: str = "miniature"
    superb_pr_steps: Optional[int] = None  # None: the preset's step budget
    superb_pr_variants: Optional[Tuple[str, ...]] = None  # variants that get SUPERB PR (None = every variant)
    abx: bool = True
    abx_max_utterances: Optional[int] = None  # first N audio lines of the eval split (None = all)
    device: str = "cpu"

    def superb_pr_of(self, variant: str) -> bool:
        """Whether ``variant``'s models are probed with SUPERB PR (the study's costliest measure: one s3prl
        training per model and probe seed)."""
        return self.superb_pr and (self.superb_pr_variants is None or variant in self.superb_pr_variants)


def superb_per(model: str, data: str, folder: str, seed: int, split: str, settings: YardstickSettings) -> float:
    """Test PER (a fraction) on ``split`` of SUPERB PR with probe seed ``seed`` on ``model``; the probe trains on
    ``data``'s train split and picks its checkpoint on valid, once per (model, seed)."""
    result = run_superb_pr(model, data, os.path.join(folder, "superb_pr", f"seed{seed}"),
                           preset=settings.superb_pr_preset, steps=settings.superb_pr_steps,
                           device=settings.device, seed=seed, test_splits=[split])
    return result["test"][test_name(split)]


def abx_of_layers(model: str, data: str, split: str, layers: Sequence[str], folder: str,
                  settings: YardstickSettings) -> Dict[str, Dict[str, float]]:
    """``{layer: {"within": %, "across": %}}`` of ``model``'s ``layers`` on ``data/<split>``; layers measured
    before (same checkpoint bytes, manifest and utterance limit) are read from ``folder/abx_<split>.json``."""
    cache = os.path.join(folder, f"abx_{split}.json")
    stamp = {"checkpoint_sha256": sha256_of(model), "manifest": os.path.join(data, f"{split}.tsv"),
             "max_utterances": settings.abx_max_utterances, "abx": abx.abx_settings()}
    cached = read_json(cache) if os.path.exists(cache) else {}
    scores = dict(cached.get("layers", {})) if cached.get("stamp") == stamp else {}
    missing = [layer for layer in dict.fromkeys(layers) if layer not in scores]
    if missing:
        abx_split = abx.load_abx_split(data, split, settings.abx_max_utterances)
        upstream = open_upstream(model).upstream.to(settings.device).eval()
        os.makedirs(folder, exist_ok=True)
        scores.update(abx.abx_of_named_layers(upstream, abx_split, os.path.join(folder, f"{split}.item"),
                                              missing, settings.device))
        write_json(cache, {"stamp": stamp, "layers": scores})
    return {layer: scores[layer] for layer in layers}
