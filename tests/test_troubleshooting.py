"""docs/troubleshooting.md quotes messages that still exist: laser-fairseq's in its code, others' in the installed package.

A heading that is one backticked span quotes a message (``…`` stands for a part that varies). An entry whose
first line is ``*From X.*`` quotes package X (searched in its installed files); every other quote must be a
fragment of one string literal (f-strings with their placeholders as ``…``) in ``laser_fairseq/`` or
``scripts/``. Headings without backticks describe symptoms and are not checked.
"""

import ast
import dataclasses
import importlib.util
import os
import re
from functools import lru_cache
from typing import Dict, List, Optional, Tuple

import pytest
from laser_fairseq.checkout import REPO

PAGE = os.path.join(REPO, "docs", "troubleshooting.md")
QUOTE = re.compile(r"^### `([^`]+)`$")
SOURCE = re.compile(r"^\*From (.+?)\.\*")
PLACEHOLDER = "…"
HOLE = "\x00"  # an f-string's replacement field in a rendered literal


def entries(text: str) -> List[Tuple[int, str, Optional[str], str]]:
    """(line, quoted message, source or None for laser-fairseq, body) of every quoting heading."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        match = QUOTE.match(line)
        if not match:
            continue
        body = []
        for following in lines[index + 1:]:
            if following.startswith("#"):
                break
            body.append(following)
        first = next((b.strip() for b in body if b.strip()), "")
        source = SOURCE.match(first)
        found.append((index + 1, match.group(1), source.group(1) if source else None, "\n".join(body).strip()))
    return found


# ------------------------------------------------------------------------------------------ laser-fairseq


def _render(node: ast.AST) -> Optional[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else HOLE for part in node.values)
    return None


@lru_cache(maxsize=None)
def project_literals(repo: str = REPO) -> Tuple[str, ...]:
    """Every string literal of the package and the scripts, f-strings with their fields as HOLE."""
    literals = []
    for top in ("laser_fairseq", "scripts"):
        for folder, _, files in os.walk(os.path.join(repo, top)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                with open(os.path.join(folder, name), encoding="utf-8") as handle:
                    tree = ast.parse(handle.read())
                for node in ast.walk(tree):
                    # parts of an f-string are visited on their own too; the whole f-string is what counts
                    rendered = _render(node)
                    if rendered:
                        literals.append(rendered)
    return tuple(literals)


def quote_pattern(quote: str) -> "re.Pattern":
    """A quote's fixed pieces in order; each ``…`` stands for anything (placeholders, text) on one line."""
    return re.compile("[^\n]*?".join(re.escape(piece) for piece in quote.split(PLACEHOLDER)))


def in_project(quote: str, literals=None) -> bool:
    pattern = quote_pattern(quote)
    return any(pattern.search(literal) for literal in (project_literals() if literals is None else literals))


# ------------------------------------------------------------------------------------------ other packages


def _package_dir(name: str) -> str:
    return os.path.dirname(importlib.util.find_spec(name).origin)


def _python_files(name: str) -> List[str]:
    return sorted(os.path.join(folder, file) for folder, _, files in os.walk(_package_dir(name))
                  for file in files if file.endswith(".py"))


def _cxx_runtime() -> List[str]:
    import torch  # noqa: F401  (loads the C++ runtime it was built with)

    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "libstdc++" in line}
    return sorted(paths)


PACKAGES = {
    "torch": lambda: _python_files("torch") + [os.path.join(_package_dir("torch"), "lib", "libtorch_cpu.so")],
    "fairseq": lambda: _python_files("fairseq") + _python_files("fairseq_cli"),  # one distribution, two packages
    "s3prl": lambda: _python_files("s3prl"),
    "Python's dataclasses": lambda: [dataclasses.__file__],
    "the C++ runtime": _cxx_runtime,
}


def in_package(quote: str, source: str) -> bool:
    """Every fixed piece of the quote occurs in one of the package's files (bytes; binaries too)."""
    pieces = [piece.encode() for piece in quote.split(PLACEHOLDER) if piece]
    for path in PACKAGES[source]():
        with open(path, "rb") as handle:
            data = handle.read()
        if all(piece in data for piece in pieces):
            return True
    return False


# ------------------------------------------------------------------------------------------ the tests

ENTRIES = entries(open(PAGE, encoding="utf-8").read())


def test_the_page_quotes_the_messages_it_should():
    sources = [source for _, _, source, _ in ENTRIES]
    assert sources.count(None) >= 40, "fewer laser-fairseq messages than the page had"
    assert set(sources) - {None} <= set(PACKAGES), f"unknown sources: {set(sources) - {None} - set(PACKAGES)}"
    quotes = [quote for _, quote, _, _ in ENTRIES]
    assert len(quotes) == len(set(quotes)), "a message is quoted twice"
    empty = [line for line, _, _, body in ENTRIES if len(body) < 40]
    assert not empty, f"entries without a fix at docs/troubleshooting.md lines {empty}"


@pytest.mark.parametrize("line,quote", [(line, quote) for line, quote, source, _ in ENTRIES if source is None],
                         ids=lambda value: str(value)[:50])
def test_each_quoted_laser_fairseq_message_is_in_the_code(line, quote):
    assert in_project(quote), (f"docs/troubleshooting.md:{line}: {quote!r} is in no string literal of "
                               f"laser_fairseq/ or scripts/: the message changed; update the page")


@pytest.mark.parametrize("line,quote,source",
                         [(line, quote, source) for line, quote, source, _ in ENTRIES if source is not None],
                         ids=lambda value: str(value)[:50])
def test_each_quoted_message_of_another_package_is_in_the_installed_package(line, quote, source):
    assert in_package(quote, source), (f"docs/troubleshooting.md:{line}: {quote!r} is not in the installed "
                                       f"{source} any more: check whether the problem still exists")


def test_the_checks_fail_for_a_changed_message():
    literals = ("{}: manifest not found. Write one with x".replace("{}", HOLE), f"a {HOLE} b {HOLE} c")
    assert in_project("manifest not found. Write one", literals)
    assert in_project("a … b … c", literals) and in_project("a … c", literals)
    assert not in_project("manifest not found. Write two", literals)
    assert not in_project("c … a", literals)  # order matters
    assert not in_project("is not allowed: use default_factory")  # another package's message
    assert not in_package("is not allowed: use default_factory, please", "Python's dataclasses")
    parsed = entries("### `one`\n\n*From torch.* why\n\n### `two`\n\nfix\n\n### a `symptom`\n\ntext\n")
    assert [(quote, source) for _, quote, source, _ in parsed] == [("one", "torch"), ("two", None)]
