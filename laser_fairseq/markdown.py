"""Markdown tables as the reports write them: the first column left-aligned (names), the others right-aligned
(numbers)."""

from typing import List, Sequence


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """The lines of a markdown table: header, alignment row, one line per row of cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
