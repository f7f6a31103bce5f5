#!/usr/bin/env python
"""Mutation testing of one scope of the core (``make mutate``): mutmut over the scope's modules, then its
report (score per module, every mutant not killed, and why when it is equivalent).

mutmut mutates every module of ``only_mutate`` in pyproject.toml (the whole core) and records which fast
test runs which function; only the mutants of the chosen scope are then tested. Each scope finishes within
~30 min on 2 cores; ``core`` runs them all at once (hours here).

    python dev/mutate.py --scope composition --jobs 2    # what `make mutate` runs
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List

REPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mutation_report.py")

SCOPES: Dict[str, List[str]] = {
    # LASER's objective, its paired views and the model wrapper
    "composition": [
        "laser_fairseq/criterions/laser_criterion.py",
        "laser_fairseq/losses/contrastive_idm.py",
        "laser_fairseq/data/paired_dataset.py",
        "laser_fairseq/data/perturbation.py",
        "laser_fairseq/tasks/laser_task.py",
        "laser_fairseq/models/laser_model.py",
    ],
    # what else a training step runs: the block-wise upstream, distances, manifests and audio reading
    "training": [
        "laser_fairseq/models/blockwise.py",
        "laser_fairseq/losses/pairwise.py",
        "laser_fairseq/data/manifest.py",
        "laser_fairseq/data/audio.py",
    ],
    # the API and dispatch (batching, autograd) and the torch backend (the numba and Triton kernels: not mutable)
    "soft_dtw": ["laser_fairseq/losses/soft_dtw.py", "laser_fairseq/losses/soft_dtw_torch.py"],
    # the export of the original formats (laser_fairseq/export/; hf.py and model_card.py are pinned by
    # tests/test_export_hf.py, test_huggingface.py and test_model_card.py, not mutated)
    "export": [
        "laser_fairseq/export/run.py",
        "laser_fairseq/export/formats.py",
        "laser_fairseq/export/plan.py",
        "laser_fairseq/export/verify.py",
        "laser_fairseq/export/report.py",
        "laser_fairseq/export/pipeline.py",
    ],
    # manifests from LibriSpeech, and the synthetic espeak-ng corpus (data/word_lists.py holds constants only,
    # and mutmut mutates code in functions: its words are pinned by tests/test_sentences.py instead)
    "corpus": [
        "laser_fairseq/data/prepare.py",
        "laser_fairseq/data/synthesis.py",
        "laser_fairseq/data/frames.py",
        "laser_fairseq/data/synthetic_corpus.py",
        "laser_fairseq/data/sentences.py",
        "laser_fairseq/data/workers.py",
    ],
}
SCOPES["core"] = [path for paths in SCOPES.values() for path in paths]


def report_path(scope: str) -> str:
    return "docs/mutation_report.md" if scope == "composition" else f"docs/mutation_report_{scope}.md"


def mutant_globs(paths: List[str]) -> List[str]:
    """mutmut names a mutant ``package.module.function__mutmut_N``: one glob per module."""
    return [path[: -len(".py")].replace("/", ".") + ".*" for path in paths]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scope", choices=sorted(SCOPES), default="composition",
                        help="modules whose mutants are tested (default: composition)")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default: 2)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    shutil.rmtree("mutants", ignore_errors=True)  # mutmut re-tests every mutant it is given by name anyway
    paths = SCOPES[args.scope]
    command = f"make mutate MUTATE_SCOPE={args.scope}"
    start = time.time()
    result = subprocess.run(
        [sys.executable, "-m", "mutmut", "run", *mutant_globs(paths), "--max-children", str(args.jobs)]
    )
    if result.returncode != 0:
        print(f"mutmut run stopped with exit code {result.returncode}; no report written", file=sys.stderr)
        return result.returncode
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout
    return subprocess.run([
        sys.executable, REPORT, "--out", report_path(args.scope), "--wall-seconds", str(round(time.time() - start)),
        "--load", load, "--command", command, "--modules", *paths,
        "--note", f"Scope `{args.scope}`: {', '.join(f'`{p}`' for p in paths)}.",
    ]).returncode


if __name__ == "__main__":
    sys.exit(main())
