"""laser_fairseq/models/hubert_resumable.py: the weights-only allow-list fairseq's trainer needs to read a
hubert_pretraining checkpoint (it pickles the label Dictionary) lasts from building the model until that
load reached it, or until the first forward when there is nothing to load; afterwards the process-wide
allow-list is as it was. (Seeded masks and an exact resume through fairseq-hydra-train:
tests/test_pretraining_run.py.)"""

import pickle

import pytest
import torch
from fairseq.data.dictionary import Dictionary
from fairseq.tasks.hubert_pretraining import HubertPretrainingTask
from omegaconf import OmegaConf

from laser_fairseq.models.hubert_resumable import HubertResumableModel
from laser_fairseq.tiny_upstream import make_tiny_hubert


def allowed() -> set:
    """torch's process-wide weights-only allow-list (a set: get_safe_globals lists it in no fixed order)."""
    return set(torch.serialization.get_safe_globals())


def build(checkpoint):
    """(task, model) as fairseq-hydra-train builds them for ``model._name: hubert_resumable``."""
    cfg = OmegaConf.create(checkpoint["cfg"])
    cfg.model._name = "hubert_resumable"
    task = HubertPretrainingTask(cfg.task)
    task.load_state_dict(checkpoint["task_state"])
    return task, task.build_model(cfg.model)


@pytest.fixture
def saved(tmp_path):
    """A tiny hubert_pretraining checkpoint as fairseq's trainer writes it (task_state holds a Dictionary)."""
    checkpoint = make_tiny_hubert(layers=1, dim=32, num_labels=5)
    assert isinstance(checkpoint["task_state"]["dictionaries"][0], Dictionary)
    path = str(tmp_path / "checkpoint_last.pt")
    torch.save(checkpoint, path)
    return checkpoint, path


def test_fairseqs_load_after_building_reads_the_dictionary_and_leaves_the_allow_list_as_it_was(saved):
    checkpoint, path = saved
    before = allowed()
    assert Dictionary not in before
    with pytest.raises(pickle.UnpicklingError, match="Dictionary"):
        torch.load(path, map_location="cpu", weights_only=True)
    _, model = build(checkpoint)
    assert isinstance(model, HubertResumableModel)
    state = torch.load(path, map_location="cpu", weights_only=True)  # what trainer.load_checkpoint does next
    assert isinstance(state["task_state"]["dictionaries"][0], Dictionary)
    model.load_state_dict(state["model"], strict=True)
    assert allowed() == before
    with pytest.raises(pickle.UnpicklingError, match="Dictionary"):
        torch.load(path, map_location="cpu", weights_only=True)


def test_without_a_checkpoint_to_load_the_first_forward_ends_the_allow_list(saved):
    checkpoint, _ = saved
    before = allowed()
    _, model = build(checkpoint)
    assert Dictionary in allowed()
    model.eval()
    with torch.no_grad():
        model(torch.randn(1, 4000), mask=False, features_only=True)
    assert allowed() == before


def test_a_dictionary_the_caller_allowed_stays_allowed(saved):
    checkpoint, path = saved
    outside = torch.serialization.get_safe_globals()
    torch.serialization.add_safe_globals([Dictionary])
    try:
        before = allowed()
        _, model = build(checkpoint)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
        assert allowed() == before
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(outside)
