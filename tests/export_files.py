"""Shared by the export's tests (tests/test_export_*.py): a tiny original upstream of each kind and a LASER
checkpoint "trained" from it in memory (new top blocks, a projection head), edited copies of both, and the
pytest fixtures that build them once per test module (import the fixtures by name)."""

import copy
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.export import export_checkpoint
from laser_fairseq.models.upstream import UpstreamSource
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_wavlm, save_checkpoint
from test_analysis import laser_checkpoint_with_new_top_blocks

LAYERS = 4
TRAINED = (2, 3)
HEAD = {"head.weight": torch.ones(8, 32), "head.bias": torch.zeros(8)}
# where a LASER checkpoint keeps the original upstream's weights
PREFIX = {"hubert": "upstream.model.", "wavlm": "upstream."}


def in_trained_blocks(key: str) -> bool:
    return any(key.startswith(f"encoder.layers.{index}.") for index in TRAINED)


class Files(NamedTuple):
    original: str  # the original upstream file
    laser_path: str  # the LASER training checkpoint trained from it
    laser: dict  # that checkpoint's dict


def make_files(kind: str, folder: Path) -> Files:
    make = make_tiny_hubert if kind == "hubert" else make_tiny_wavlm
    original = str(folder / "original.pt")
    save_checkpoint(make(layers=LAYERS, dim=32, seed=3), original)
    laser = laser_checkpoint_with_new_top_blocks(original, trained=len(TRAINED))
    laser["cfg"]["model"]["upstream_path"] = original
    laser["model"].update(HEAD)
    laser_path = str(folder / "checkpoint_last.pt")
    torch.save(laser, laser_path)
    return Files(original, laser_path, laser)


@pytest.fixture(scope="module", params=["hubert", "wavlm"])
def files(request, tmp_path_factory):
    """(original upstream path, LASER checkpoint path, the LASER checkpoint dict) of one upstream kind."""
    return make_files(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def hubert(tmp_path_factory):
    return make_files("hubert", tmp_path_factory.mktemp("hubert_only"))


@pytest.fixture(scope="module")
def wavlm(tmp_path_factory):
    return make_files("wavlm", tmp_path_factory.mktemp("wavlm_only"))


def edited_run(files: Files, path: Path, cfg=None, model=None, drop=(), **top) -> str:
    """A copy of the LASER checkpoint with cfg.model / model entries replaced (None deletes) and top-level keys set."""
    state = dict(files.laser, cfg=copy.deepcopy(files.laser["cfg"]), model=dict(files.laser["model"]), **top)
    for key, value in (cfg or {}).items():
        state["cfg"]["model"].pop(key) if value is None else state["cfg"]["model"].__setitem__(key, value)
    for key, value in (model or {}).items():
        state["model"].pop(key) if value is None else state["model"].__setitem__(key, value)
    for key in drop:
        del state[key]
    torch.save(state, str(path))
    return str(path)


def edited_source(files: Files, path: Path, edit) -> str:
    """A copy of the original upstream file, changed by ``edit(state)``."""
    state = load_checkpoint(files.original)
    edit(state)
    torch.save(state, str(path))
    return str(path)


def corrupted_copy(output: str, path: str, key: str, value: torch.Tensor):
    state = load_checkpoint(output)
    state["model"] = dict(state["model"], **{key: value})
    torch.save(state, path)


def half_precision_run(files: Files, path: Path, precision: dict) -> str:
    """The LASER run as an fp16 run saves it: frozen tensors rounded to float16, stored as float32."""
    prefix = PREFIX["hubert"]
    model = {
        key: value.half().float() if key.startswith(prefix) and value.is_floating_point() else value
        for key, value in files.laser["model"].items()
    }
    state = dict(files.laser, model=model, cfg=dict(files.laser["cfg"], common=precision))
    torch.save(state, str(path))
    return str(path)


def source_of(kind: str, fmt: str) -> UpstreamSource:
    return UpstreamSource(f"/models/{kind}_{fmt}", kind, fmt, {})


@pytest.fixture(scope="module")
def hubert_export(hubert, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("hubert_export") / "exported.pt")
    export_checkpoint(hubert.laser_path, output)
    return output


def written_with(export_path: str, path: Path, edit) -> str:
    state = load_checkpoint(export_path)
    state["model"] = dict(state["model"])
    edit(state)
    torch.save(state, str(path))
    return str(path)


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory):
    """A tiny transformers HubertModel directory and a LASER checkpoint trained (in memory) from it."""
    from laser_fairseq.tiny_upstream import save_tiny_hf_directory

    folder = tmp_path_factory.mktemp("hf")
    original = str(folder / "hubert_hf")
    save_tiny_hf_directory(original, "hubert", layers=LAYERS, seed=5)
    laser = laser_checkpoint_with_new_top_blocks(original, trained=len(TRAINED))
    laser["cfg"]["model"]["upstream_path"] = original
    laser_path = str(folder / "checkpoint_last.pt")
    torch.save(laser, laser_path)
    return Files(original, laser_path, laser)
