"""The variants of the LASER effect table: the paper's objective, its two ablations and the untrained upstream.

Each trained variant is the LASER run with criterion overrides; everything else (data, updates, learning
rate, seed) is shared, so the rows differ only in the objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    criterion_overrides: Tuple[str, ...]  # fairseq-hydra-train overrides of the criterion
    trains: bool = True


VARIANTS: Dict[str, Variant] = {
    "laser": Variant("laser", "soft-DTW divergence + alpha * Contrastive-IDM (the paper's objective)", ()),
    "sdtw_only": Variant("sdtw_only", "soft-DTW divergence only (alpha = 0, the paper's ablation)",
                         ("criterion.alpha=0.0",)),
    "idm_only": Variant("idm_only", "Contrastive-IDM only (no alignment term)", ("criterion.sdtw_weight=0.0",)),
    "upstream": Variant("upstream", "the upstream as it is (no training)", (), trains=False),
}


def parse_variants(names: List[str]) -> List[Variant]:
    """Variants by name, in the order given; unknown names are refused with the known ones."""
    unknown = [name for name in names if name not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    if len(set(names)) != len(names):
        raise ValueError(f"variants listed twice: {names}")
    return [VARIANTS[name] for name in names]
