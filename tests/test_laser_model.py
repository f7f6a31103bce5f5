"""The `laser` model's freezing contract and its batching, on tiny HuBERT and WavLM checkpoints."""

import os

import pytest
import torch
from fairseq.models.hubert import HubertModel

from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.models.laser_model import LaserModel, LaserModelConfig
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_wavlm

from device_checks import assert_same_with_meta_as_default_device
from laser_runs import save_tiny_upstreams

CHECKPOINTS = {
    "hubert": lambda: make_tiny_hubert(layers=4, dim=64),
    "hubert_pre_ln": lambda: make_tiny_hubert(layers=4, dim=64, layer_norm_first=True),
    "wavlm": lambda: make_tiny_wavlm(layers=4, dim=64),
    "wavlm_pre_ln": lambda: make_tiny_wavlm(layers=4, dim=64, layer_norm_first=True),
}


@pytest.fixture(scope="module")
def upstream_paths(tmp_path_factory):
    return save_tiny_upstreams(tmp_path_factory.mktemp("upstreams"), CHECKPOINTS)


def build(path, trainable_layers=2) -> LaserModel:
    return LaserModel.build_model(LaserModelConfig(upstream_path=path, trainable_layers=trainable_layers))


def waves(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        batch[row, :n] = 0.1 * torch.randn(n, generator=generator)
    mask = torch.arange(max(lengths))[None, :] >= torch.tensor(lengths)[:, None]
    return batch, mask


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_only_the_top_blocks_and_head_require_grad(upstream_paths, name):
    model = build(upstream_paths[name])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    layers = model.upstream.layers
    expected = {f"head.{n}" for n, _ in model.head.named_parameters()}
    prefix = "upstream.model.encoder.layers" if "hubert" in name else "upstream.encoder.layers"
    for index in (2, 3):
        expected |= {f"{prefix}.{index}.{n}" for n, _ in layers[index].named_parameters()}
    assert trainable == expected


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_train_mode_reaches_only_the_top_blocks_and_gradients_only_them(upstream_paths, name):
    model = build(upstream_paths[name]).train()
    frozen_modules = [m for i, layer in enumerate(model.upstream.layers) if i < 2 for m in layer.modules()]
    assert not any(m.training for m in frozen_modules)
    assert all(m.training for m in model.upstream.layers[3].modules())
    source, mask = waves([16000, 12000])
    out = model(source, source.flip(1), mask, mask.flip(1))
    (out["z_a"].sum() + out["z_b"].sum()).backward()
    for name_, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name_
        else:
            assert parameter.grad is None, name_


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_a_padded_pair_gets_the_frames_of_a_batch_of_one(upstream_paths, name):
    model = build(upstream_paths[name]).eval()
    source_a, mask_a = waves([16000, 9000, 12345], seed=1)
    source_b, mask_b = waves([14000, 11000, 8000], seed=2)
    with torch.no_grad():
        batched = model(source_a, source_b, mask_a, mask_b)
        for row in range(3):
            alone = model(
                source_a[row : row + 1, : int((~mask_a[row]).sum())], source_b[row : row + 1, : int((~mask_b[row]).sum())]
            )
            for view in ("a", "b"):
                frames = int(alone[f"lengths_{view}"][0])
                assert int(batched[f"lengths_{view}"][row]) == frames
                torch.testing.assert_close(
                    batched[f"z_{view}"][row, :frames], alone[f"z_{view}"][0], rtol=0, atol=2e-5
                )
    norms = batched["z_a"][0].norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_hubert_upstream_equals_fairseqs_own_forward(upstream_paths):
    model = build(upstream_paths["hubert"]).eval()
    hubert: HubertModel = model.upstream.model
    source, _ = waves([20000])
    with torch.no_grad():
        ours, _ = model.encode(source)
        theirs, _ = hubert.extract_features(source, padding_mask=None, mask=False)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("trainable_layers", [0, 5])
def test_trainable_layers_out_of_range_is_refused_with_the_range(upstream_paths, trainable_layers):
    with pytest.raises(ValueError, match=r"trainable_layers=.* between 1 and 4"):
        build(upstream_paths["hubert"], trainable_layers)


def test_all_blocks_can_be_trained(upstream_paths):
    model = build(upstream_paths["wavlm"], trainable_layers=4)
    assert list(model.trainable_block_indices) == [0, 1, 2, 3]
    assert not any(p.requires_grad for p in model.upstream.feature_extractor.parameters())


def test_missing_upstream_file_is_named(tmp_path):
    missing = os.path.join(tmp_path, "nope.pt")
    with pytest.raises(ValueError, match="nope.pt"):
        build(missing)


def test_defaults_are_the_papers_and_eval_mode_reaches_every_module(upstream_paths):
    cfg = LaserModelConfig(upstream_path=upstream_paths["hubert"])
    assert (cfg.trainable_layers, cfg.proj_dim, cfg.extra_safe_globals) == (2, 256, [])
    model = LaserModel.build_model(cfg)
    assert (model.head.in_features, model.head.out_features) == (64, 256)
    assert list(model.trainable_block_indices) == [2, 3]
    model.train()
    model.eval()
    assert not any(module.training for module in model.modules())
    source, mask = waves([16000, 12000])
    with torch.no_grad():
        out = model(source, source[:, :9000], mask, None)
    assert out["z_a"].shape[-1] == out["z_b"].shape[-1] == 256
    frames = (9000 - 400) // 320 + 1  # the CNN's frame count
    assert out["lengths_b"].tolist() == [frames, frames] and out["z_b"].shape[1] == frames
    torch.testing.assert_close(out["z_b"].norm(dim=-1), torch.ones(2, frames))


def test_the_start_up_log_counts_trainable_and_frozen_parameters(upstream_paths, caplog):
    with caplog.at_level("INFO", logger="laser_fairseq.models.laser_model"):
        model = build(upstream_paths["hubert"])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    assert 0 < trainable < total
    assert f"training blocks [2, 3] + head; {trainable:,} trainable / {total - trainable:,} frozen parameters" in (
        caplog.text
    )


@pytest.mark.parametrize("name", ["hubert", "wavlm"])
def test_every_tensor_the_wrapper_makes_is_on_the_device_of_the_input(upstream_paths, name):
    model = build(upstream_paths[name]).eval()
    source_a, mask_a = waves([9000, 6000], seed=3)
    source_b, _ = waves([7000, 7000], seed=4)
    keys = ("z_a", "lengths_a", "z_b", "lengths_b")

    def outputs():
        with torch.no_grad():
            padded = model(source_a, source_b, mask_a, None)
            unpadded = model(source_b, source_b)  # frame lengths made inside, without a mask
        return [padded[key] for key in keys] + [unpadded["lengths_a"]]

    assert_same_with_meta_as_default_device(outputs)


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_the_upstream_gives_back_the_original_weights_under_the_original_names(upstream_paths, name):
    original = load_checkpoint(upstream_paths[name])["model"]
    weights = build(upstream_paths[name]).upstream.original_state_dict()
    assert list(weights) == list(original)
    for key, value in original.items():
        assert torch.equal(weights[key], value), key
