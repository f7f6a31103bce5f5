"""Soft-DTW / soft-DTW divergence against an independent float64 reference written from the definition."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from laser_fairseq.losses import soft_dtw, soft_dtw_divergence
from laser_fairseq.losses.pairwise import squared_distances
from laser_fairseq.losses.soft_dtw import _numba_available, _triton_available
from laser_fairseq.losses.soft_dtw_torch import TorchDP

from device_checks import assert_same_with_meta_as_default_device
from soft_dtw_reference import padded_batch, ref_batch, ref_divergence, ref_sdtw


soft_dtw_module = importlib.import_module("laser_fairseq.losses.soft_dtw")  # `soft_dtw` is the function


def _triton_runs_on_cpu() -> bool:
    """The Triton kernels were built for Triton's CPU interpreter (tests/conftest.py sets it without a GPU)."""
    if not _triton_available():
        return False
    from laser_fairseq.losses import soft_dtw_triton

    return soft_dtw_triton.interpreted()


CPU_BACKENDS = ["torch"] + (["numba"] if _numba_available() else []) + (["triton"] if _triton_runs_on_cpu() else [])
# Triton's interpreter costs ~10-30 ms per anti-diagonal: cases with ~1,000 diagonals per problem run for
# triton in tests/test_soft_dtw_triton.py at smaller sizes, and at full size in scripts/gpu_check.py
TOO_SLOW_ON_INTERPRETER = "too slow under Triton's interpreter: see tests/test_soft_dtw_triton.py, scripts/gpu_check.py"


# ----------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("gamma", [0.1, 1.0])
@pytest.mark.filterwarnings("error:An output with one or more elements was resized")  # buffers made to size
def test_values_padded_variable_lengths(backend, gamma):
    x, y, xl, yl = padded_batch(0, [6, 1, 4, 9], [5, 7, 1, 3])
    got = soft_dtw(x, y, xl, yl, gamma=gamma, backend=backend)
    want = ref_batch(ref_sdtw, x, y, xl, yl, gamma)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)
    got = soft_dtw_divergence(x, y, xl, yl, gamma=gamma, backend=backend)
    want = ref_batch(ref_divergence, x, y, xl, yl, gamma)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_full_lengths_default(backend):
    x, y, _, _ = padded_batch(1, [5, 5], [4, 4])
    full_x, full_y = torch.full((2,), x.shape[1]), torch.full((2,), y.shape[1])
    a = soft_dtw_divergence(x, y, gamma=0.5, backend=backend)
    b = soft_dtw_divergence(x, y, full_x, full_y, gamma=0.5, backend=backend)
    np.testing.assert_allclose(a.numpy(), ref_batch(ref_divergence, x, y, full_x, full_y, 0.5), atol=1e-10)
    assert torch.equal(a, b)


def test_auto_matches_torch():
    x, y, xl, yl = padded_batch(2, [6, 3], [4, 8])
    a = soft_dtw_divergence(x, y, xl, yl, backend="auto")
    b = soft_dtw_divergence(x, y, xl, yl, backend="torch")
    np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-10)


def test_squared_distances():
    a, b = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    want = ((a[:, :, None, :] - b[:, None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(squared_distances(a, b).numpy(), want.numpy(), atol=1e-12)
    assert (squared_distances(a, a) >= 0).all()


@pytest.mark.parametrize(
    "a_shape, b_shape, message",
    [
        ((4, 3), (2, 5, 3), r"expects a \(B, N, d\) and b \(B, M, d\), got a \(4, 3\)"),
        ((2, 4, 3), (5, 3), r"expects a \(B, N, d\) and b \(B, M, d\), got a \(2, 4, 3\) and b \(5, 3\)"),
        ((2, 4, 3), (3, 5, 3), r"batch and feature sizes must match, got a \(2, 4, 3\) and b \(3, 5, 3\)"),
        ((2, 4, 3), (2, 5, 2), r"batch and feature sizes must match, got a \(2, 4, 3\) and b \(2, 5, 2\)"),
    ],
)
def test_squared_distances_refuses_shapes_that_do_not_pair(a_shape, b_shape, message):
    with pytest.raises(ValueError, match=message):
        squared_distances(torch.zeros(a_shape), torch.zeros(b_shape))


# ----------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradient_vs_finite_differences_of_reference(backend):
    gamma, eps = 0.2, 1e-6
    x, y, xl, yl = padded_batch(3, [4, 2], [3, 5], d=2)
    x.requires_grad_(True)
    y.requires_grad_(True)
    weights = torch.tensor([1.0, -0.7], dtype=torch.float64)
    (soft_dtw_divergence(x, y, xl, yl, gamma=gamma, backend=backend) * weights).sum().backward()

    def total(xa, ya):
        return sum(w * v for w, v in zip(weights.tolist(), ref_batch(ref_divergence, xa, ya, xl, yl, gamma)))

    for t, grad, other_first in ((x, x.grad, True), (y, y.grad, False)):
        base = t.detach().clone()
        for idx in np.ndindex(*base.shape):
            b, f = idx[0], idx[1]
            if f >= int((xl if other_first else yl)[b]):
                continue  # padded frame: checked separately (exactly zero)
            plus, minus = base.clone(), base.clone()
            plus[idx] += eps
            minus[idx] -= eps
            if other_first:
                fd = (total(plus, y) - total(minus, y)) / (2 * eps)
            else:
                fd = (total(x, plus) - total(x, minus)) / (2 * eps)
            assert abs(fd - float(grad[idx])) < 1e-6, (idx, fd, float(grad[idx]))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradcheck_with_padding(backend):
    x, y, xl, yl = padded_batch(4, [3, 1, 4], [4, 2, 1], d=2)
    x.requires_grad_(True)
    y.requires_grad_(True)
    fast = backend == "triton"  # one random projection: a few interpreted calls instead of ~130
    assert torch.autograd.gradcheck(
        lambda a, b: soft_dtw_divergence(a, b, xl, yl, gamma=0.3, backend=backend), (x, y), fast_mode=fast)
    assert torch.autograd.gradcheck(lambda a, b: soft_dtw(a, b, xl, yl, gamma=0.1, backend=backend), (x, y),
                                    fast_mode=fast)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("pad_value", [0.0, 5.0, math.inf, math.nan])
def test_gradient_exactly_zero_at_padding(backend, pad_value):
    x, y, xl, yl = padded_batch(5, [5, 2, 3], [3, 6, 1], d=4, pad_value=pad_value)
    x.requires_grad_(True)
    y.requires_grad_(True)
    d = soft_dtw_divergence(x, y, xl, yl, gamma=0.1, backend=backend)
    assert torch.isfinite(d).all()
    d.sum().backward()
    for t, lengths in ((x, xl), (y, yl)):
        for b in range(t.shape[0]):
            assert torch.all(t.grad[b, lengths[b]:] == 0)
            assert torch.isfinite(t.grad[b, :lengths[b]]).all()
            assert t.grad[b, :lengths[b]].abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Divergence properties and numerical robustness
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_divergence_zero_for_identical_and_nonnegative(backend):
    x, _, xl, _ = padded_batch(6, [7, 3, 5], [1, 1, 1], d=4)
    d_same = soft_dtw_divergence(x, x.clone(), xl, xl, gamma=0.1, backend=backend)
    np.testing.assert_allclose(d_same.numpy(), 0.0, atol=1e-10)
    g = torch.Generator().manual_seed(7)
    for _ in range(5):
        xs = torch.randn(4, 9, 3, generator=g, dtype=torch.float64)
        ys = xs + 0.3 * torch.randn(4, 8, 3, generator=g, dtype=torch.float64)[:, :1]
        lx = torch.randint(1, 10, (4,), generator=g)
        ly = torch.randint(1, 10, (4,), generator=g)
        for gamma in (0.01, 0.1, 1.0):
            assert (soft_dtw_divergence(xs, ys, lx, ly, gamma=gamma, backend=backend) >= -1e-10).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_nan_with_zero_distances(backend):
    for dtype in (torch.float64, torch.float32):
        x = torch.zeros(2, 6, 3, dtype=dtype, requires_grad=True)
        y = torch.zeros(2, 4, 3, dtype=dtype, requires_grad=True)
        d = soft_dtw_divergence(x, y, gamma=0.1, backend=backend)
        s = soft_dtw(x, y, gamma=0.1, backend=backend)
        (d.sum() + s.sum()).backward()
        for t in (d, s, x.grad, y.grad):
            assert torch.isfinite(t).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_long_pairs_small_gamma_finite(backend):
    if backend == "triton":
        pytest.skip(TOO_SLOW_ON_INTERPRETER)
    g = torch.Generator().manual_seed(8)
    x = torch.nn.functional.normalize(torch.randn(2, 800, 16, generator=g), dim=-1).requires_grad_(True)
    y = torch.nn.functional.normalize(torch.randn(2, 780, 16, generator=g), dim=-1).requires_grad_(True)
    xl, yl = torch.tensor([800, 640]), torch.tensor([700, 780])
    d = soft_dtw_divergence(x, y, xl, yl, gamma=0.01, backend=backend)
    d.sum().backward()
    assert torch.isfinite(d).all() and (d > 0).all()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("long", [False, True])
def test_float32_close_to_float64(backend, long):
    """float32 within 1e-4 of float64 (relative to the largest value / gradient), also on long pairs
    where R reaches hundreds (the DP keeps diagonals relative to a float64 level)."""
    if long and backend == "triton":
        pytest.skip(TOO_SLOW_ON_INTERPRETER)
    g = torch.Generator().manual_seed(9)
    n, m = (320, 300) if long else (40, 30)
    x64 = torch.nn.functional.normalize(torch.randn(3, n, 8, generator=g, dtype=torch.float64), dim=-1)
    y64 = torch.nn.functional.normalize(torch.randn(3, m, 8, generator=g, dtype=torch.float64), dim=-1)
    xl, yl = torch.tensor([n, n * 5 // 8, n * 4 // 5]), torch.tensor([m, m, m * 2 // 5])
    results = {}
    for dtype in (torch.float64, torch.float32):
        x = x64.to(dtype).clone().requires_grad_(True)
        y = y64.to(dtype).clone().requires_grad_(True)
        d = soft_dtw_divergence(x, y, xl, yl, gamma=0.1, backend=backend)
        d.sum().backward()
        assert d.dtype == dtype and x.grad.dtype == dtype
        results[dtype] = (d.detach().double(), x.grad.double(), y.grad.double())
    for a, b in zip(results[torch.float32], results[torch.float64]):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computed_in_float32(backend, dtype):
    x, y, xl, yl = padded_batch(10, [6, 4], [5, 7], d=4, dtype=dtype)
    x.requires_grad_(True)
    y.requires_grad_(True)
    d = soft_dtw_divergence(x, y, xl, yl, gamma=0.1, backend=backend)
    assert d.dtype == dtype
    d.sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()
    want = soft_dtw_divergence(x.detach().float(), y.detach().float(), xl, yl, gamma=0.1, backend=backend)
    assert torch.equal(d, want.to(dtype))


# ----------------------------------------------------------------------------------------------
# Input validation
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(x=torch.randn(4, 3), y=torch.randn(2, 4, 3)), "x"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(3, 4, 3)), "batch"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 5)), "feature"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), x_lengths=torch.tensor([4, 5])), "x_lengths"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), y_lengths=torch.tensor([0, 2])), "y_lengths"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), y_lengths=torch.tensor([2])), "y_lengths"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), x_lengths=torch.tensor([2.0, 3.0])),
         "x_lengths"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), x_lengths=torch.tensor([True, True])), "x_lengths"),
        (dict(x=torch.randn(1, 4, 3), y=torch.randn(1, 4, 3), y_lengths=torch.tensor([5])), "y_lengths"),
        (dict(x=torch.randn(1, 0, 3), y=torch.randn(1, 4, 3)), "x must have at least one frame"),
        (dict(x=torch.randn(1, 4, 3), y=torch.randn(1, 0, 3)), "y must have at least one frame"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), gamma=0.0), "gamma"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), backend="fast"), "backend"),
        (dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), backend="cuda"), "replaced by 'triton'"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, name):
    for fn in (soft_dtw, soft_dtw_divergence):
        with pytest.raises(ValueError, match=name):
            fn(**kwargs)


# ----------------------------------------------------------------------------------------------
# Defaults, devices, and the first-use self-check's probe
# ----------------------------------------------------------------------------------------------


def test_defaults_are_gamma_0_1_and_the_auto_backend():
    x, y, _, _ = padded_batch(11, [5, 4], [3, 6])
    want = dict(gamma=0.1, backend="auto")
    assert torch.equal(soft_dtw(x, y), soft_dtw(x, y, gamma=0.1, backend="auto"))
    assert torch.equal(soft_dtw_divergence(x, y), soft_dtw_divergence(x, y, **want))
    assert soft_dtw(x, y)[0].item() == pytest.approx(ref_sdtw(x[0].numpy(), y[0].numpy(), 0.1), rel=1e-9)


@pytest.mark.parametrize("backend", ["torch", "numba"] if _numba_available() else ["torch"])
def test_every_tensor_made_inside_is_on_the_device_of_the_inputs(backend):
    x, y, xl, yl = padded_batch(12, [5, 3], [4, 6])

    def values_and_grads():
        xg, yg = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
        values = soft_dtw_divergence(xg, yg, xl, yl, backend=backend)
        values.sum().backward()
        plain = soft_dtw(x, y, backend=backend)  # lengths made inside too
        return values.detach(), xg.grad, yg.grad, plain

    assert_same_with_meta_as_default_device(values_and_grads)


class _RecordingTorchBackend(soft_dtw_module._CostLevel):
    """The torch backend, recording what the self-check asks of it."""

    def __init__(self):
        super().__init__(TorchDP)
        self.calls = []

    def forward(self, x, y, x_lengths, y_lengths, divergence, gamma):
        self.calls.append(dict(x=x.detach().clone(), y=y.detach().clone(), x_lengths=x_lengths.tolist(),
                               y_lengths=y_lengths.tolist(), divergence=divergence, gamma=gamma))
        return super().forward(x, y, x_lengths, y_lengths, divergence, gamma)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_self_check_probes_the_backend_with_the_documented_problem_in_its_dtype(dtype):
    backend = _RecordingTorchBackend()
    value_error, grad_error = soft_dtw_module.self_check_errors(backend, torch.device("cpu"), dtype)
    assert len(backend.calls) == 1
    call = backend.calls[0]
    assert call["x"].dtype == call["y"].dtype == dtype
    assert call["x"].shape == (2, 16, 8) and call["y"].shape == (2, 14, 8)
    assert (call["x_lengths"], call["y_lengths"]) == ([16, 9], [12, 14])
    assert call["divergence"] is True and call["gamma"] == 0.1
    for frames, lengths in ((call["x"], call["x_lengths"]), (call["y"], call["y_lengths"])):
        for row, n in enumerate(lengths):
            norms = frames[row, :n].double().norm(dim=-1)
            torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-6)  # unit-norm frames
            assert torch.all(frames[row, n:] == 0)  # padding zeroed
    if dtype == torch.float64:
        assert value_error == grad_error == 0.0  # the reference is the same computation
    else:
        assert 0.0 < value_error < 1e-6 and 0.0 < grad_error < 1e-5


class _WrongOnlyInFloat32(soft_dtw_module._CostLevel):
    """A backend whose float32 values are 1 % off and whose float64 values are right."""

    def __init__(self):
        super().__init__(TorchDP)

    def forward(self, x, y, x_lengths, y_lengths, divergence, gamma):
        values, state = super().forward(x, y, x_lengths, y_lengths, divergence, gamma)
        return ([v * 1.01 for v in values] if x.dtype == torch.float32 else values), state


def test_the_self_check_compares_in_the_dtype_it_was_asked_for():
    wrong = _WrongOnlyInFloat32()
    value_error, _ = soft_dtw_module.self_check_errors(wrong, torch.device("cpu"), torch.float32)
    assert value_error > 5e-3
    assert soft_dtw_module.self_check_errors(wrong, torch.device("cpu"), torch.float64)[0] < 1e-12


def test_a_backend_that_fails_its_self_check_only_in_float32_is_refused_in_float32(monkeypatch):
    monkeypatch.setattr(soft_dtw_module, "_SELF_CHECKED", set())
    soft_dtw_module._self_check_once("wrong32", _WrongOnlyInFloat32(), torch.device("cpu"), torch.float64)
    with pytest.raises(RuntimeError, match=r"'wrong32' failed its first-use self-check on cpu \(torch.float32\)"):
        soft_dtw_module._self_check_once("wrong32", _WrongOnlyInFloat32(), torch.device("cpu"), torch.float32)
    assert soft_dtw_module._SELF_CHECKED == {("wrong32", "cpu", torch.float64)}


class _Float64CostsDP(TorchDP):
    """The torch DP with ``cost_dtype`` set, as the Triton DP sets it: records the dtype of its costs."""

    cost_dtype = torch.float64
    seen = []

    @staticmethod
    def forward(costs, rows, cols, symmetric, gamma):
        _Float64CostsDP.seen = [c.dtype for c in costs]
        return TorchDP.forward(costs, rows, cols, symmetric, gamma)


def test_a_dp_with_a_cost_dtype_gets_its_costs_in_it_and_gives_gradients_in_the_input_dtype():
    x, y, xl, yl = padded_batch(14, [5, 3], [4, 6], dtype=torch.float32)
    backend = soft_dtw_module._CostLevel(_Float64CostsDP)
    values, state = backend.forward(x, y, xl, yl, True, 0.1)
    assert _Float64CostsDP.seen == [torch.float64] * 3 and all(v.dtype == torch.float64 for v in values)
    grads = [torch.ones(2, dtype=torch.float64)] * 3
    grad_x, grad_y = backend.backward(state, grads, x, y)
    assert grad_x.dtype == grad_y.dtype == torch.float32
    # the float64 chaining, rounded once: equal to the float64 computation's rounding
    exact = soft_dtw_module._CostLevel(TorchDP)
    values64, state64 = exact.forward(x.double(), y.double(), xl, yl, True, 0.1)
    want_x, want_y = exact.backward(state64, grads, x.double(), y.double())
    assert torch.equal(grad_x, want_x.float()) and torch.equal(grad_y, want_y.float())


def test_every_input_error_names_its_argument_first():
    cases = {
        "x must have shape (B, T, d)": dict(x=torch.randn(4, 3), y=torch.randn(2, 4, 3)),
        "y must have shape (B, T, d)": dict(x=torch.randn(2, 4, 3), y=torch.randn(4, 3)),
        "x_lengths must lie in [1, 4]": dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), x_lengths=torch.tensor([4, 5])),
        "y_lengths must lie in [1, 4]": dict(x=torch.randn(2, 4, 3), y=torch.randn(2, 4, 3), y_lengths=torch.tensor([0, 2])),
    }
    for start, kwargs in cases.items():
        with pytest.raises(ValueError) as error:
            soft_dtw(**kwargs)
        assert str(error.value).startswith(start), str(error.value)


def test_one_frame_sequences_are_valid():
    x, y = torch.randn(2, 1, 3, dtype=torch.float64), torch.randn(2, 1, 3, dtype=torch.float64)
    torch.testing.assert_close(soft_dtw(x, y), ((x - y) ** 2).sum(dim=(1, 2)))


def test_an_empty_batch_gives_an_empty_result_and_is_still_checked():
    for fn in (soft_dtw, soft_dtw_divergence):
        out = fn(torch.zeros(0, 3, 2, dtype=torch.float64), torch.zeros(0, 4, 2, dtype=torch.float64))
        assert out.shape == (0,) and out.dtype == torch.float64
        with pytest.raises(ValueError, match="same feature size"):
            fn(torch.zeros(0, 3, 2), torch.zeros(0, 4, 5))


def test_each_backend_name_resolves_to_its_implementation():
    cpu = torch.device("cpu")
    assert soft_dtw_module._resolve_backend("torch", cpu, torch.float32).dp is TorchDP
    if _numba_available():
        from laser_fairseq.losses.soft_dtw_numba import NumbaSoftDTW

        assert soft_dtw_module._resolve_backend("numba", cpu, torch.float32) is NumbaSoftDTW
        assert soft_dtw_module._resolve_backend("auto", cpu, torch.float32) is NumbaSoftDTW
