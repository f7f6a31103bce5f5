"""The effect table: per variant, mean ± std over seeds of each measure; per-seed rows in the CSV; a PNG.

Input: one record per evaluated (variant, seed), a flat dict ``{"variant", "seed", <column>: value}``
(values None when not available). Columns are described by :data:`COLUMNS`.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ..plotting import pyplot


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    better: str  # "higher", "lower" or "" (descriptive)


COLUMNS: List[Column] = [
    Column("phone_acc_top", "phone acc (top layer)", "higher"),
    Column("phone_per_top", "PER (top layer)", "lower"),
    Column("phone_acc_best", "phone acc (best layer on valid)", "higher"),
    Column("retrieval_map_top", "cross-voice MAP (top)", "higher"),
    Column("voice_probe_top", "voice probe (top)", ""),
    Column("invariance_top", "invariance (top)", "higher"),
    Column("mean_cosine_top", "mean pairwise cosine (top)", ""),
    Column("effective_rank_top", "effective rank (top)", ""),
    Column("superb_per", "SUPERB-PR PER", "lower"),
    Column("superb_per_rel", "SUPERB-PR PER rel. to upstream", "lower"),
    Column("abx_within_top", "ABX within % (top)", "lower"),
    Column("abx_across_top", "ABX across % (top)", "lower"),
    Column("abx_within_best", "ABX within % (best layer)", "lower"),
    Column("abx_across_best", "ABX across % (best layer)", "lower"),
]


@dataclass
class Aggregate:
    mean: Optional[float]
    std: Optional[float]  # sample standard deviation (n - 1); None for a single value
    n: int


def aggregate(values: Sequence[Optional[float]]) -> Aggregate:
    """Mean and sample std of the available (not None, not NaN) values."""
    present = [float(v) for v in values if v is not None and not math.isnan(v)]
    if not present:
        return Aggregate(None, None, 0)
    std = statistics.stdev(present) if len(present) > 1 else None
    return Aggregate(statistics.fmean(present), std, len(present))


def variant_order(records: Sequence[dict]) -> List[str]:
    order: List[str] = []
    for record in records:
        if record["variant"] not in order:
            order.append(record["variant"])
    return order


def summarise(records: Sequence[dict], columns: Sequence[Column] = COLUMNS) -> Dict[str, Dict[str, Aggregate]]:
    """variant -> column key -> Aggregate over that variant's seeds."""
    return {
        variant: {
            column.key: aggregate([r.get(column.key) for r in records if r["variant"] == variant])
            for column in columns
        }
        for variant in variant_order(records)
    }


def format_aggregate(value: Aggregate, digits: int = 3) -> str:
    if value.mean is None:
        return "n/a"
    if value.std is None:
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f} ± {value.std:.{digits}f}"


def markdown_table(records: Sequence[dict], columns: Sequence[Column] = COLUMNS) -> str:
    """Rows: variants (with the number of seeds); columns: mean ± std of each measure."""
    summary = summarise(records, columns)
    arrows = {"higher": " ↑", "lower": " ↓", "": ""}
    header = ["variant", "seeds"] + [column.title + arrows[column.better] for column in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---:"] + ["---:"] * len(columns)) + "|"]
    for variant, values in summary.items():
        seeds = sum(1 for r in records if r["variant"] == variant)
        cells = [variant, str(seeds)] + [format_aggregate(values[column.key]) for column in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(records: Sequence[dict], columns: Sequence[Column] = COLUMNS) -> str:
    header = ["variant", "seed"] + [column.title for column in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---", "---:"] + ["---:"] * len(columns)) + "|"]
    for record in records:
        cells = [record["variant"], str(record["seed"])]
        cells += ["n/a" if record.get(c.key) is None else f"{record[c.key]:.4f}" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


YARDSTICK_ABX = ("abx_within_top", "abx_across_top", "abx_within_best", "abx_across_best")


def yardstick_table(records: Sequence[dict], reference: str = "upstream") -> str:
    """The field's yardsticks per variant: SUPERB-PR PER (3 decimals), its change relative to the paired upstream
    probe in % (1 decimal, signed), every seed's PER and change, and the four ABX columns (%, 1 decimal);
    mean ± sample std over seeds. The ``reference`` variant's relative column reads "reference"; a variant
    without SUPERB-PR values reads "n/a" in the three SUPERB-PR columns."""
    abx_titles = [column.title + " ↓" for key in YARDSTICK_ABX for column in COLUMNS if column.key == key]
    header = ["variant", "seeds", "SUPERB-PR PER ↓", "PER relative to the upstream ↓", "per seed (PER; relative)",
              *abx_titles]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---|" + "---:|" * len(abx_titles)]
    for variant in variant_order(records):
        rows = sorted((r for r in records if r["variant"] == variant), key=lambda r: r["seed"])
        per = aggregate([r.get("superb_per") for r in rows])
        if per.mean is None:  # a variant not probed with SUPERB PR (--superb-pr-variants)
            relative, seeds = "n/a", "n/a"
        elif variant == reference:
            relative, seeds = "reference", ", ".join(f"{r['superb_per']:.3f}" for r in rows)
        else:
            change = aggregate([100 * r["superb_per_rel"] for r in rows])
            relative = f"{change.mean:+.1f} %" + ("" if change.std is None else f" ± {change.std:.1f}")
            seeds = ", ".join(f"{r['superb_per']:.3f} ({100 * r['superb_per_rel']:+.1f} %)" for r in rows)
        cells = [variant, str(len(rows)), format_aggregate(per), relative, seeds]
        cells += [format_aggregate(aggregate([r[key] for r in rows]), digits=1) for key in YARDSTICK_ABX]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: str, records: Sequence[dict]):
    """One row per (variant, seed) with every recorded value (the per-seed numbers behind the table)."""
    fields: List[str] = []
    for record in records:
        fields += [key for key in record if key not in fields]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for record in records:
            writer.writerow({key: ("" if record.get(key) is None else record[key]) for key in fields})


def plot(path: str, records: Sequence[dict], columns: Sequence[Column] = COLUMNS):
    """One panel per column: a bar per variant (mean) with its std as an error bar, seeds as dots."""
    plt = pyplot()
    summary = summarise(records, columns)
    variants = list(summary)
    cols = 4
    rows = math.ceil(len(columns) / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for axis, column in zip(axes.flat, columns):
        for position, variant in enumerate(variants):
            value = summary[variant][column.key]
            if value.mean is None:
                continue
            axis.bar(position, value.mean, yerr=value.std or 0.0, capsize=4, color=f"C{position}", alpha=0.6)
            seeds = [r[column.key] for r in records if r["variant"] == variant and r.get(column.key) is not None]
            axis.plot([position] * len(seeds), seeds, "k.", markersize=4)
        axis.set_xticks(range(len(variants)))
        axis.set_xticklabels(variants, rotation=20, fontsize=8)
        axis.set_title(column.title + {"higher": " (↑)", "lower": " (↓)", "": ""}[column.better], fontsize=9)
    for axis in list(axes.flat)[len(columns):]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
