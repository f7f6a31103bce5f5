"""Fixtures shared by the test modules."""

import pytest

from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint


@pytest.fixture(scope="session")
def upstream(tmp_path_factory):
    """A tiny random HuBERT checkpoint in fairseq's format (make_tiny_hubert's defaults), written once."""
    path = str(tmp_path_factory.mktemp("upstream") / "tiny_hubert.pt")
    save_checkpoint(make_tiny_hubert(), path)
    return path
