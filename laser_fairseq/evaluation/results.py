"""The effect study's result files in ``--out``: ``<stem>.md`` (mean ± std over seeds, then per-seed rows),
``<stem>.csv`` (one row per variant and seed), ``<stem>.png`` and ``<stem>.json`` (the records and the chosen
setting of a sweep). ``<stem>`` is ``results``, ``results_<split>`` or ``sweep`` (:func:`.study.results_stem`).
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

from ..files import write_json, write_text
from . import table


def header(options, stem: str, reported_split: str, records: Sequence[dict], chosen: Optional[str],
           missing: Sequence[str] = ()) -> list:
    """The markdown lines above the tables: what was measured where, by which command, and how to read it."""
    sweep = stem == "sweep"
    lines = [f"# {'Sweep (selection split only)' if sweep else 'LASER vs its ablations'}", "",
             f"- upstream: `{options.upstream}`; data: `{options.data}`; measured on `{reported_split}`"
             + ("" if sweep else f"; best layer chosen on `{options.select_split}`"),
             f"- command: `{options.command}`",
             "- mean ± sample std over seeds (trained variants); the upstream's own measures are deterministic "
             "(measured once)"]
    if not sweep and any(r.get("superb_per") is not None for r in records):
        lines.append("- SUPERB PR: s3prl's recipe (preset "
                     f"{options.yardsticks.superb_pr_preset}, steps "
                     f"{options.yardsticks.superb_pr_steps or 'of the preset'}), trained on train, checkpoint picked "
                     f"on valid, PER on `{reported_split}`; the upstream is probed once per probe seed 1..N and seed k "
                     "of a variant is paired with the upstream's probe seed k for the relative change "
                     "(PER - PER_upstream) / PER_upstream"
                     + ("" if options.yardsticks.superb_pr_variants is None else
                        "; probed variants (--superb-pr-variants): "
                        + ", ".join(options.yardsticks.superb_pr_variants) + ", the others n/a"))
    if not sweep and any(r.get("abx_within_top") is not None for r in records):
        lines.append("- ABX: fastabx triphone ABX error (%, chance 50) within / across voices of the top layer and "
                     f"of the best layer, on `{reported_split}`")
    if missing:
        lines.append(f"- not trained, left out of this table (--measure-only): {', '.join(missing)}")
    chances = {key: value for key, value in records[0].items() if key.endswith("_chance") and value is not None}
    if chances:
        lines.append("- chance levels: " + ", ".join(f"{key} {value:.3f}" for key, value in chances.items()))
    lines.append("")
    if chosen:
        lines += [f"Chosen on `{options.select_split}` by the highest mean phone_acc_top: **{chosen}**", ""]
    return lines


def write_results(options, records: Sequence[dict], stem: str, reported_split: str, chosen: Optional[str] = None,
                  missing: Sequence[str] = ()):
    """Writes the four files of ``stem`` to ``options.out`` (each whole, then renamed) and prints the markdown."""
    columns = [column for column in table.COLUMNS if any(r.get(column.key) is not None for r in records)]
    paths = {ext: os.path.join(options.out, f"{stem}.{ext}") for ext in ("md", "csv", "png")}
    lines = header(options, stem, reported_split, records, chosen, missing)
    lines += [table.markdown_table(records, columns), "", "## Per seed", "", table.per_seed_table(records, columns),
              ""]
    write_text(paths["md"], "\n".join(lines))
    table.write_csv(paths["csv"], records)
    table.plot(paths["png"], records, columns)
    write_json(os.path.join(options.out, f"{stem}.json"), {"records": list(records), "chosen": chosen,
                                                          "not_trained": list(missing)})
    print("\n".join(lines))
    for path in paths.values():
        print(f"wrote {path}")
