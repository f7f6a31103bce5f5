"""One row of the effect table per (variant, seed): the flat record of a model's measures on the reported split.

A record is ``{"variant", "seed", "lr", "max_update", "top_layer", "best_layer_on_select", <column>: value}``
(None where a value is not available); :mod:`.table` aggregates records over seeds.

Relative SUPERB-PR change, as the paper reports it: ``(PER_variant - PER_upstream) / PER_upstream``. The
SUPERB probe is random too (its head's initialisation and batch order follow its seed), so the upstream is
probed once per seed k and a trained variant's seed k (LASER seed k, probe seed k) is paired with the
upstream's probe seed k: each seed gives one relative change, and the table reports their mean ± std.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

SUPERB_PER = "superb_per"
SUPERB_PER_RELATIVE = "superb_per_rel"


def best_layer(measures: dict, key: str = "phone_acc") -> Optional[str]:
    """The layer with the highest ``key`` (None if no layer has it)."""
    scored = [(values.get(key), name) for name, values in measures["layers"].items() if values.get(key) is not None]
    return max(scored)[1] if scored else None


def record(variant: str, seed: int, lr: float, max_update: int, reported: dict, selection: dict) -> dict:
    """The flat table record of one model: top-layer values on the reported split, the phone probe of the
    layer that is best on the selection split, measured on the reported split, and the chance levels."""
    top = reported["layers"][reported["top_layer"]]
    chosen = best_layer(selection)
    result = {"variant": variant, "seed": seed, "lr": lr, "max_update": max_update,
              "top_layer": reported["top_layer"], "best_layer_on_select": chosen}
    for key, value in top.items():
        result[f"{key}_top"] = value
    result["phone_acc_best"] = reported["layers"][chosen].get("phone_acc") if chosen else None
    result["phone_per_best"] = reported["layers"][chosen].get("phone_per") if chosen else None
    for key, value in reported.get("chance", {}).items():
        result[key] = value
    return result


def add_abx(entry: dict, scores: Dict[str, Dict[str, float]]) -> dict:
    """``abx_{within,across}_{top,best}`` (%) from ``{layer: {"within", "across"}}`` of the entry's top layer and
    best layer."""
    for where, layer in (("top", entry["top_layer"]), ("best", entry["best_layer_on_select"])):
        for mode in ("within", "across"):
            entry[f"abx_{mode}_{where}"] = scores[layer][mode] if layer in scores else None
    return entry


def relative_change(value: Optional[float], reference: Optional[float]) -> Optional[float]:
    """``(value - reference) / reference``; None when either is missing or the reference is 0."""
    if value is None or reference is None or reference == 0:
        return None
    return (value - reference) / reference


def add_relative_per(records: Sequence[dict], upstream: str = "upstream") -> List[dict]:
    """Each record's ``superb_per_rel``: its ``superb_per`` relative to the upstream record of the same seed
    (the upstream's own records get 0.0; None without an upstream record of that seed)."""
    reference = {r["seed"]: r.get(SUPERB_PER) for r in records if r["variant"] == upstream}
    for entry in records:
        entry[SUPERB_PER_RELATIVE] = relative_change(entry.get(SUPERB_PER), reference.get(entry["seed"]))
    return list(records)
