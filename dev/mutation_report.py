#!/usr/bin/env python
"""Write the report of a mutmut run (``make mutate``): score per module and overall, and every mutant that
was not killed with its file:line, the mutation and, when it is one, why it is equivalent.

Reads mutmut's results from ``mutants/`` (run it from the repository root after ``mutmut run``). A
surviving mutant is "explained" when docs/mutation_equivalents.toml lists its file, original line and
mutated line with a reason; explained mutants leave the score's denominator.

    python dev/mutation_report.py --out docs/mutation_report.md --wall-seconds 1500 --load "$(uptime)"
"""

from __future__ import annotations

import argparse
import ast
import glob
import json
import os
import re
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from laser_fairseq.files import write_text

# A mutant that makes a test hang (timeout) or crash the test process (mutmut's "segfault": SIGSEGV, or SIGKILL
# at its CPU limit) is detected too; crashes are listed in their own section so that each can be checked.
KILLED = {"killed", "timeout", "segfault"}
HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@")


@dataclass
class Mutant:
    name: str
    path: str  # source file, relative to the repository root
    status: str
    line: int = 0
    original: str = ""
    mutated: str = ""
    why: str = ""

    @property
    def explained(self) -> bool:
        return bool(self.why) and self.status not in KILLED


def read_results(mutants_dir: str) -> List[Mutant]:
    """Every mutant of every mutated file with its mutmut status."""
    from mutmut.stats import status_by_exit_code

    results = []
    for meta in sorted(glob.glob(os.path.join(mutants_dir, "**", "*.py.meta"), recursive=True)):
        path = os.path.relpath(meta, mutants_dir)[: -len(".meta")]
        with open(meta, encoding="utf-8") as handle:
            exit_codes = json.load(handle)["exit_code_by_key"]
        results += [Mutant(name, path, status_by_exit_code[code]) for name, code in exit_codes.items()]
    return results


def function_lines(path: str) -> Dict[Tuple[Optional[str], str], int]:
    """(class name or None, function name) -> line of its ``def`` in the source file."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    lines = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines[(None, node.name)] = node.lineno
        elif isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines[(node.name, member.name)] = member.lineno
    return lines


def locate(mutant: Mutant, def_lines: Dict[Tuple[Optional[str], str], int]):
    """Fill in the mutant's source line number and its first changed line before / after."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.utils.format_utils import orig_function_and_class_names_from_key

    diff = get_diff_for_mutant(mutant.name, path=mutant.path).splitlines()
    function, class_name = orig_function_and_class_names_from_key(mutant.name)
    def_line = def_lines[(class_name, function.rpartition(".")[-1])]
    function_source = original_function_source(mutant)
    def_index = next(i for i, text in enumerate(function_source) if re.match(r"\s*(async\s+)?def ", text))
    index = None
    for text_index, text in _hunk_lines(diff):
        if text.startswith("-") and not mutant.original:
            mutant.original, index = text[1:].strip(), text_index
        elif text.startswith("+") and not mutant.mutated:
            mutant.mutated = text[1:].strip()
            index = text_index if index is None else index
    mutant.line = def_line + (index or 0) - def_index


def original_function_source(mutant: Mutant) -> List[str]:
    """The lines of the unmutated function exactly as mutmut diffs them (decorators and comments first)."""
    import libcst as cst
    from mutmut.mutation.diff_apply import read_functions_from_index, read_mutants_module, read_original_function

    functions = read_functions_from_index(mutant.name, mutant.path)
    original = functions[0] if functions else read_original_function(read_mutants_module(mutant.path), mutant.name)
    return cst.Module([original]).code.strip().split("\n")


def _hunk_lines(diff: List[str]):
    """(0-based line index in the original function, text) of the '-', '+' and context lines of the diff."""
    position = 0
    for text in diff:
        hunk = HUNK.match(text)
        if hunk:
            position = int(hunk.group(1)) - 1
        elif text.startswith(("---", "+++")):
            continue
        elif text.startswith("+"):
            yield position, text
        elif text.startswith(("-", " ")):
            yield position, text
            position += 1


def read_equivalents(path: str) -> Dict[Tuple[str, str, str], str]:
    """(file, original line, mutated line) -> why the mutant is equivalent."""
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as handle:
        entries = tomllib.load(handle).get("equivalent", [])
    table = {}
    for number, entry in enumerate(entries, start=1):
        missing = {"file", "original", "mutated", "why"} - set(entry)
        if missing:
            sys.exit(f"{path}: [[equivalent]] number {number} lacks {sorted(missing)}")
        table[(entry["file"], entry["original"].strip(), entry["mutated"].strip())] = entry["why"]
    return table


def module_of(path: str) -> str:
    return path.replace(os.sep, "/")


def checked(mutants: List[Mutant]) -> List[Mutant]:
    """Mutants that were tested and are not explained as equivalent (the score's denominator)."""
    return [m for m in mutants if m.status != "not checked" and not m.explained]


def score(mutants: List[Mutant]) -> Tuple[int, int, float]:
    """(killed, counted, percent) over the checked mutants that are not explained."""
    counted = checked(mutants)
    killed = sum(m.status in KILLED for m in counted)
    return killed, len(counted), 100.0 * killed / max(1, len(counted))


def render(mutants: List[Mutant], wall_seconds: Optional[float], load: str, command: str, note: str) -> str:
    by_module: Dict[str, List[Mutant]] = defaultdict(list)
    for mutant in mutants:
        by_module[module_of(mutant.path)].append(mutant)
    killed, counted, overall = score(mutants)
    unchecked = sum(m.status == "not checked" for m in mutants)
    out = [
        "# Mutation report",
        "",
        f"Written by `dev/mutation_report.py` after `{command}` (mutmut 3.8.1, see docs/contributing.md).",
        "",
    ]
    if note:
        out += [note, ""]
    out += [
        f"**Overall: {overall:.1f} % killed** ({killed} of {counted} mutants; "
        f"{sum(m.explained for m in mutants)} more explained as equivalent and not counted"
        + (f"; {unchecked} not checked" if unchecked else "") + ").",
        "",
    ]
    if wall_seconds is not None:
        out += [f"Wall time: {wall_seconds / 60:.1f} min. Load: `{load.strip()}`", ""]
    out += ["| module | mutants | killed | timeout | survived | no tests | other | explained | not checked | score |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for module, group in sorted(by_module.items()):
        counts = defaultdict(int)
        for mutant in group:
            counts[mutant.status] += 1
        named = ("killed", "timeout", "survived", "no tests", "not checked")
        other = len(group) - sum(counts[s] for s in named)
        _, group_counted, percent = score(group)
        shown = f"{percent:.1f} %" if group_counted else "—"
        out.append(
            f"| `{module}` | {len(group)} | {counts['killed']} | {counts['timeout']} | {counts['survived']} | "
            f"{counts['no tests']} | {other} | {sum(m.explained for m in group)} | {counts['not checked']} | "
            f"{shown} |"
        )
    out += ["", "Statuses are mutmut's: *no tests* means no test of the fast selection runs the mutated "
            "function; *other* counts suspicious and segfault (a crash of the test process, counted as killed). "
            "Score = (killed + timeout + segfault) / (checked - explained).", ""]
    living = [m for m in mutants if m.status not in KILLED and m.status != "not checked"]
    out += ["## Mutants not killed", ""]
    for module, group in sorted(by_module.items()):
        rows = sorted((m for m in group if m in living), key=lambda m: (m.line, m.name))
        if not rows:
            continue
        out += [f"### `{module}`", "", "| line | mutation | status | equivalent because |", "|---|---|---|---|"]
        for m in rows:
            change = f"`{_cell(m.original)}` → `{_cell(m.mutated)}`"
            out.append(f"| {module}:{m.line} | {change} | {m.status} | {_cell(m.why) or '—'} |")
        out.append("")
    if not living:
        out.append("None.")
    crashed = sorted((m for m in mutants if m.status == "segfault"), key=lambda m: (module_of(m.path), m.line, m.name))
    if crashed:
        out += ["", "## Mutants that crashed the test process (counted as killed)", "",
                "| line | mutation |", "|---|---|"]
        out += [f"| {module_of(m.path)}:{m.line} | `{_cell(m.original)}` → `{_cell(m.mutated)}` |" for m in crashed]
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", default="mutants", help="mutmut's working folder (default: mutants)")
    parser.add_argument("--equivalents", default="docs/mutation_equivalents.toml",
                        help="explanations of equivalent mutants (default: docs/mutation_equivalents.toml)")
    parser.add_argument("--out", default="docs/mutation_report.md", help="report to write (Markdown)")
    parser.add_argument("--wall-seconds", type=float, default=None, help="wall time of the mutmut run")
    parser.add_argument("--load", default="", help="`uptime` output to print beside the wall time")
    parser.add_argument("--command", default="make mutate", help="the command the report describes")
    parser.add_argument("--note", default="", help="a paragraph printed under the title (e.g. a partial scope)")
    parser.add_argument("--modules", nargs="+", default=None,
                        help="report only these source files (default: every file mutmut mutated)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not os.path.isdir(args.mutants):
        sys.exit(f"{args.mutants}: no mutmut results here; run `make mutate` (or `mutmut run`) first")
    mutants = read_results(args.mutants)
    if args.modules is not None:
        unknown = sorted(set(args.modules) - {module_of(m.path) for m in mutants})
        if unknown:
            sys.exit(f"--modules: mutmut made no mutants of {unknown}; check only_mutate in pyproject.toml")
        mutants = [m for m in mutants if module_of(m.path) in set(args.modules)]
    if not mutants:
        sys.exit(f"{args.mutants}: mutmut wrote no mutants; check [tool.mutmut] in pyproject.toml")
    equivalents = read_equivalents(args.equivalents)
    def_lines = {}
    for mutant in mutants:
        if mutant.status in ("killed", "timeout", "not checked"):  # crashes are located too: they are listed
            continue
        if mutant.path not in def_lines:
            def_lines[mutant.path] = function_lines(mutant.path)
        locate(mutant, def_lines[mutant.path])
        mutant.why = equivalents.get((module_of(mutant.path), mutant.original, mutant.mutated), "")
    text = render(mutants, args.wall_seconds, args.load, args.command, args.note)
    write_text(args.out, text)
    killed, counted, overall = score(mutants)
    print(f"{args.out}: {overall:.1f} % killed ({killed} of {counted}), "
          f"{sum(m.status not in KILLED and m.status != 'not checked' and not m.explained for m in mutants)} "
          f"unexplained survivors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
