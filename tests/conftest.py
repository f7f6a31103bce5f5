"""Session settings and fixtures shared by the tests.

Without a GPU, the Triton soft-DTW kernels run under Triton's CPU interpreter. Triton decides between
compiling and interpreting when a kernel module is imported, so ``TRITON_INTERPRET=1`` is set here,
before any test imports it (an explicit setting in the environment wins). Only Triton kernels are
affected, and this project has no other Triton code.
"""

import json
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint  # noqa: E402  (after TRITON_INTERPRET)


def pytest_collection_modifyitems(config, items):
    """Under ``make mutate``, run a mutant's tests fastest first: mutmut stops at the first failure, and its
    forkserver runner hands them over in no particular order. Durations are those mutmut recorded."""
    if not os.environ.get("MUTANT_UNDER_TEST") or not os.path.isfile("mutmut-stats.json"):
        return
    with open("mutmut-stats.json", encoding="utf-8") as handle:
        durations = json.load(handle).get("duration_by_test", {})
    items.sort(key=lambda item: durations.get(item.nodeid, float("inf")))


def pytest_configure(config):
    # Triton 3.6's interpreter converts 1-element arrays to Python ints the way NumPy >= 1.25 deprecates
    config.addinivalue_line(
        "filterwarnings", "ignore:Conversion of an array with ndim > 0 to a scalar:DeprecationWarning:triton.*")


@pytest.fixture(scope="session")
def upstream(tmp_path_factory):
    """A tiny random HuBERT checkpoint in fairseq's format (make_tiny_hubert's defaults), written once."""
    path = str(tmp_path_factory.mktemp("upstream") / "tiny_hubert.pt")
    save_checkpoint(make_tiny_hubert(), path)
    return path
