"""Mixed precision: the laser model's head output and the criterion's whole loss stay float32 when the upstream
runs in float16 / bfloat16 (what fairseq's common.fp16 / common.bf16 do to the model) or under autocast
(common.amp); and a real `common.bf16=true` LASER run on CPU, exported and reloaded.

fairseq's FP16Optimizer asks for a CUDA device with common.fp16, so an fp16 *run* needs a GPU:
scripts/gpu_check.py runs fp32, fp16 and bf16 there.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from laser_fairseq.checkpoint_io import load_checkpoint
from laser_fairseq.criterions.laser_criterion import LaserCriterion, LaserCriterionConfig
from laser_fairseq.export import ExportError, export_checkpoint
from laser_fairseq.losses import contrastive_idm, soft_dtw_divergence
from laser_fairseq.models.laser_model import LaserModel, LaserModelConfig, _stack_views
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_wavlm

from laser_runs import check_laser_run, save_tiny_upstreams

MAKERS = {"hubert": lambda: make_tiny_hubert(layers=4, dim=64), "wavlm": lambda: make_tiny_wavlm(layers=4, dim=64)}


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory):
    return save_tiny_upstreams(tmp_path_factory.mktemp("upstreams"), MAKERS)


def views(dtype):
    """Two views of 2 utterances with padding, as the task collates them, in the model's dtype."""
    generator = torch.Generator().manual_seed(0)
    lengths_a, lengths_b = [6000, 5200], [5600, 6400]
    net_input = {}
    for name, lengths in (("a", lengths_a), ("b", lengths_b)):
        wave = 0.1 * torch.randn(len(lengths), max(lengths), generator=generator)
        mask = torch.arange(max(lengths))[None, :] >= torch.tensor(lengths)[:, None]
        net_input[f"source_{name}"] = wave.masked_fill(mask, 0.0).to(dtype)
        net_input[f"padding_mask_{name}"] = mask
    return {"net_input": net_input}


def by_hand(model, criterion, sample):
    """Upstream features in the model's dtype, then head and loss in float32 written out here."""
    net_input = sample["net_input"]
    out = model(**net_input)
    batch = net_input["source_a"].shape[0]
    features, _ = model.encode(*_stack_views(net_input["source_a"], net_input["padding_mask_a"],
                                             net_input["source_b"], net_input["padding_mask_b"]))
    cfg = criterion.cfg
    with torch.autocast("cpu", enabled=False):
        z = F.normalize(F.linear(features.float(), model.head.weight.float(), model.head.bias.float()), dim=-1)
        z_a, z_b = z[:batch, : out["z_a"].shape[1]], z[batch:, : out["z_b"].shape[1]]
        loss = soft_dtw_divergence(z_a, z_b, out["lengths_a"], out["lengths_b"], gamma=cfg.gamma, backend="torch")
        loss = loss + cfg.alpha * (contrastive_idm(z_a, out["lengths_a"], cfg.sigma, cfg.margin)
                                   + contrastive_idm(z_b, out["lengths_b"], cfg.sigma, cfg.margin))
    return features, out, z_a, loss.sum()


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_model_gets_float32_head_and_loss(upstreams, kind, dtype):
    model = LaserModel.build_model(LaserModelConfig(upstream_path=upstreams[kind])).to(dtype).eval()
    criterion = LaserCriterion(LaserCriterionConfig(soft_dtw_backend="torch"), task=None)
    sample = views(dtype)
    loss, pairs, logging_output = criterion(model, sample)
    features, out, z_a, want = by_hand(model, criterion, sample)
    assert features.dtype == dtype  # the upstream really ran in half precision
    assert out["z_a"].dtype == torch.float32 and torch.equal(out["z_a"], z_a)
    assert loss.dtype == torch.float32 and torch.equal(loss, want) and pairs == 2
    assert all(math.isfinite(logging_output[key]) for key in ("loss", "sdtw", "idm"))
    half_head = F.normalize(model.head(features), dim=-1)  # what a half-precision head would have given
    assert not torch.equal(half_head[:2, : z_a.shape[1]].float(), z_a)
    loss.backward()
    assert model.head.weight.grad.dtype == dtype and torch.isfinite(model.head.weight.grad.float()).all()
    top = model.upstream.layers[-1]
    assert all(p.grad is not None and torch.isfinite(p.grad.float()).all() for p in top.parameters())


def test_autocast_leaves_head_and_loss_in_float32(upstreams):
    model = LaserModel.build_model(LaserModelConfig(upstream_path=upstreams["hubert"])).eval()
    criterion = LaserCriterion(LaserCriterionConfig(soft_dtw_backend="torch"), task=None)
    sample = views(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _, _ = criterion(model, sample)
        features, out, z_a, want = by_hand(model, criterion, sample)
    assert features.dtype == torch.bfloat16  # autocast ran the upstream's matmuls in bfloat16
    assert out["z_a"].dtype == torch.float32 and torch.equal(out["z_a"], z_a)
    assert loss.dtype == torch.float32 and torch.equal(loss, want)


def test_bf16_run_on_cpu_trains_exports_and_reloads(upstreams, tmp_path):
    """common.bf16=true with common.cpu=true, checked as scripts/gpu_check.py checks its runs: loss finite and
    falling, frozen tensors equal to the original's bfloat16 rounding in the checkpoint, export verified and
    reloaded with frozen tensors bit-identical to the original; a tampered frozen tensor is still refused."""
    upstream = upstreams["hubert"]
    results = check_laser_run(upstream, str(tmp_path), "bf16", "cpu", updates=12)
    assert [name for name, _, _ in results] == ["loss finite and falling", "frozen tensors unchanged",
                                                "export + reload"]
    assert all(ok for _, ok, _ in results), results
    checkpoint = str(tmp_path / "checkpoints" / "checkpoint_last.pt")
    state, original = load_checkpoint(checkpoint)["model"], load_checkpoint(upstream)["model"]
    frozen = "upstream.model.encoder.layers.0.fc1.weight"
    # fairseq trained a bf16 copy of the whole model and saved it as float32 (utils.move_to_cpu)
    assert state[frozen].dtype == torch.float32 and not torch.equal(state[frozen], original[frozen[15:]])
    tampered = load_checkpoint(checkpoint)
    tampered["model"][frozen] = original[frozen[15:]].clone()
    torch.save(tampered, tmp_path / "tampered.pt")
    with pytest.raises(ExportError, match=r"after rounding to torch.bfloat16, the run's precision"):
        export_checkpoint(str(tmp_path / "tampered.pt"), str(tmp_path / "never.pt"))
