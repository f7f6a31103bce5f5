#!/usr/bin/env python
"""Apply each mutant listed in issue 18 by hand to a scratch copy of the repository and report which tests
fail: the check that the tests added for that issue catch a wrong objective.

Each mutant is one textual replacement in one product file (the file must contain the original text exactly
once, else the mutant is reported as "not applicable": the code moved on). The scratch copy is deleted
afterwards; the working tree is never modified.

    python dev/listed_mutants.py                 # all mutants, Markdown table on stdout
    python dev/listed_mutants.py --only swap-flag --keep
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import List, Sequence

from laser_fairseq.checkout import REPO

COPIED = ("laser_fairseq", "tests", "manifests", "scripts", "benchmarks", "dev", "examples", "pyproject.toml")
FAST_DESELECT = (
    "--deselect", "tests/test_bad_input.py::test_fairseq_hydra_train_stops_with_the_message_and_writes_no_checkpoint",
    "--deselect", "tests/test_prepare_librispeech.py::test_cli_reports_progress_rejections_and_exit_codes",
)


@dataclass(frozen=True)
class ListedMutant:
    key: str
    what: str
    path: str
    original: str
    mutated: str
    tests: Sequence[str]
    pattern: bool = False  # original is a regular expression, mutated its replacement


MUTANTS = [
    ListedMutant(
        "alpha-one-term", "criterion: alpha weighs only IDM(Z_b)", "laser_fairseq/criterions/laser_criterion.py",
        r'(contrastive_idm\((?:z_a|out\["z_a"\]), out\["lengths_a"\], self\.cfg\.sigma, self\.cfg\.margin\)) \+ ',
        r"\1 / self.cfg.alpha + ",
        ["tests/test_criterion.py"], pattern=True,
    ),
    ListedMutant(
        "idm-b-padding", "criterion: IDM(Z_b) without its lengths (padding counted)",
        "laser_fairseq/criterions/laser_criterion.py",
        r'((?:z_b|out\["z_b"\]), )out\["lengths_b"\](, self\.cfg\.sigma, self\.cfg\.margin)', r"\1None\2",
        ["tests/test_criterion.py"], pattern=True,
    ),
    ListedMutant(
        "pitch-ratio", "pitch shift stretches by the ratio instead of its inverse", "laser_fairseq/data/perturbation.py",
        "stretched = time_stretch(waveform, 1.0 / float(ratio))", "stretched = time_stretch(waveform, float(ratio))",
        ["tests/test_perturbation.py"],
    ),
    ListedMutant(
        "swap-flag", "swap_views=False ignored", "laser_fairseq/data/perturbation.py",
        "swap = bool(self.swap_views and rng.random() < 0.5)", "swap = bool(rng.random() < 0.5)",
        ["tests/test_perturbation.py"],
    ),
    ListedMutant(
        "swap-drawn", "a drawn swap ignored (the original is always view A)", "laser_fairseq/data/perturbation.py",
        "        if perturbation.swap:\n            return perturbed, waveform, perturbation",
        "        if False:\n            return perturbed, waveform, perturbation",
        ["tests/test_perturbation.py"],
    ),
    ListedMutant(
        "verify-skips-trained", "export verification skips the tensors of the trained blocks",
        "laser_fairseq/export/verify.py",
        "        for key, value in written.items()\n        if not _is_expected(",
        "        for key, value in written.items()\n        if not is_in_blocks(key, trained_blocks) and not _is_expected(",
        ["tests/test_export_verify.py"],
    ),
    ListedMutant(
        "valid-epoch-dataset", "validation draws follow the epoch (dataset ignores fixed_perturbations)",
        "laser_fairseq/data/paired_dataset.py",
        "epoch = 0 if self.fixed_perturbations else self.epoch", "epoch = self.epoch",
        ["tests/test_perturbation.py"],
    ),
    ListedMutant(
        "valid-epoch-task", "validation draws follow the epoch (the task never asks for fixed draws)",
        "laser_fairseq/tasks/laser_task.py",
        "fixed_perturbations=not is_train,", "fixed_perturbations=False,",
        ["tests/test_perturbation.py"],
    ),
    ListedMutant(
        "analysis-index", "analysis perturbation seed ignores the utterance index",
        "laser_fairseq/analysis/features.py",
        "perturber.draw(np.random.default_rng([seed, index]))", "perturber.draw(np.random.default_rng([seed]))",
        ["tests/test_analysis.py"],
    ),
    ListedMutant(
        "min-samples", "manifest tool refuses a file of exactly --min-samples samples", "laser_fairseq/data/prepare.py",
        "if samples.shape[0] < min_samples:", "if samples.shape[0] <= min_samples:",
        ["tests/test_bad_input.py", "tests/test_prepare_librispeech.py"],
    ),
]


def scratch_copy(destination: str):
    for name in COPIED:
        source = os.path.join(REPO, name)
        target = os.path.join(destination, name)
        if os.path.isdir(source):
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.converted.pt"))
        else:
            shutil.copy2(source, target)


def apply(mutant: ListedMutant, root: str) -> bool:
    """Write the mutant into the copy; False when the original text is not there exactly once."""
    path = os.path.join(root, mutant.path)
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if mutant.pattern:
        mutated, count = re.subn(mutant.original, mutant.mutated, text)
    else:
        mutated, count = text.replace(mutant.original, mutant.mutated), text.count(mutant.original)
    if count != 1:
        return False
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(mutated)
    return True


def restore(mutant: ListedMutant, root: str):
    shutil.copy2(os.path.join(REPO, mutant.path), os.path.join(root, mutant.path))


def failing_tests(root: str, tests: Sequence[str]) -> List[str]:
    """Node ids of the tests that fail in the copy (pytest run in a subprocess on the copy's code)."""
    env = dict(os.environ, PYTHONPATH=root, OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    command = [sys.executable, "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider", *FAST_DESELECT, *tests]
    result = subprocess.run(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return re.findall(r"^FAILED (\S+)", result.stdout, flags=re.MULTILINE)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", choices=[m.key for m in MUTANTS],
                        help="run only this mutant (repeatable); default: all")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy and print where it is")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    chosen = [m for m in MUTANTS if not args.only or m.key in args.only]
    root = tempfile.mkdtemp(prefix="listed-mutants-")
    surviving = 0
    try:
        scratch_copy(root)
        if failing_tests(root, sorted({test for m in chosen for test in m.tests})):
            sys.exit("the unmutated copy already fails its tests; fix that first")
        print("| mutant | what | failing tests |\n|---|---|---|")
        for mutant in chosen:
            if not apply(mutant, root):
                print(f"| {mutant.key} | {mutant.what} | not applicable: `{mutant.path}` changed |")
                continue
            failed = failing_tests(root, mutant.tests)
            restore(mutant, root)
            surviving += not failed
            print(f"| {mutant.key} | {mutant.what} | {', '.join(f'`{t}`' for t in failed) or '**none: survives**'} |",
                  flush=True)
    finally:
        if args.keep:
            print(f"scratch copy kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if surviving else 0


if __name__ == "__main__":
    sys.exit(main())
