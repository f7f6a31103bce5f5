"""`make mutate`'s scopes (dev/mutate.py) cover exactly what mutmut mutates (pyproject.toml)."""

import os
import tomllib

from dev import mutate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_scope_module_is_mutated_and_every_mutated_module_is_in_one_scope():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        only_mutate = tomllib.load(handle)["tool"]["mutmut"]["only_mutate"]
    scoped = [path for name, paths in mutate.SCOPES.items() if name != "core" for path in paths]
    assert len(scoped) == len(set(scoped))  # no module in two scopes
    assert sorted(scoped) == sorted(only_mutate) == sorted(mutate.SCOPES["core"])
    for path in scoped:
        assert os.path.isfile(os.path.join(ROOT, path)), path


def test_a_scope_selects_the_mutants_of_its_modules_only():
    assert mutate.mutant_globs(["laser_fairseq/losses/pairwise.py"]) == ["laser_fairseq.losses.pairwise.*"]
    assert mutate.report_path("composition") == "docs/mutation_report.md"
    assert mutate.report_path("export") == "docs/mutation_report_export.md"
