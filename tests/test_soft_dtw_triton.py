"""The Triton soft-DTW kernels: under Triton's CPU interpreter here (tests/conftest.py), on CUDA when there is a GPU.

test_soft_dtw.py runs its shared value / gradient / padding cases on backend='triton' too; this file adds
what is specific to it: float32 against a float64 reference on variable-length pairs at gamma 0.1 and 0.01,
the launch plans (one problem per program as on a GPU, partial tiles, diagonals longer than a program's
lanes) giving bit-identical results, the first-use self-check, what 'auto' picks, and compilation for an
H100 with Triton's own toolchain. The full-size checks (B=8 x 500 x 450, lengths 200-800, 800- and
2,000-frame pairs) take minutes under the interpreter: scripts/gpu_check.py runs them.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from laser_fairseq.losses import soft_dtw, soft_dtw_divergence
from laser_fairseq.losses.soft_dtw import _numba_available, _triton_available, auto_backend

dispatch = importlib.import_module("laser_fairseq.losses.soft_dtw")  # the module (the package exports a function)

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not _triton_available(), reason="triton with its NVIDIA backend is not installed")


def kernels():
    from laser_fairseq.losses import soft_dtw_triton

    return soft_dtw_triton


def device() -> torch.device:
    """Where backend='triton' runs: the GPU, or the CPU under the interpreter."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if not kernels().interpreted():
        pytest.skip("no GPU, and the Triton kernels were imported without TRITON_INTERPRET=1")
    return torch.device("cpu")


def unit_batch(seed: int, x_lengths, y_lengths, d: int, dtype=torch.float64):
    """Padded batch of unit-norm frames (zero padding) with the given lengths."""
    g = torch.Generator().manual_seed(seed)
    xl, yl = torch.tensor(x_lengths), torch.tensor(y_lengths)
    x = F.normalize(torch.randn(len(xl), int(xl.max()) + 3, d, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(len(yl), int(yl.max()) + 1, d, generator=g, dtype=torch.float64), dim=-1)
    for b in range(len(xl)):
        x[b, xl[b]:] = 0.0
        y[b, yl[b]:] = 0.0
    return x.to(dtype), y.to(dtype), xl, yl


def divergence_and_grads(x, y, xl, yl, gamma, backend, fn=soft_dtw_divergence, where=None):
    """(values, grad_x, grad_y) of ``sum(w * fn(x, y))`` with fixed weights w, back on the CPU in float64."""
    where = where or x.device
    xd, yd = (t.detach().to(where, copy=True).requires_grad_(True) for t in (x, y))
    values = fn(xd, yd, xl.to(where), yl.to(where), gamma=gamma, backend=backend)
    weights = torch.linspace(1.0, -0.5, len(xl), dtype=values.dtype, device=where)
    (values * weights).sum().backward()
    return [t.detach().cpu().double() for t in (values, xd.grad, yd.grad)]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).abs().max() / want.abs().max())


# ----------------------------------------------------------------------------------------------
# Accuracy of float32 inputs against float64
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.1, 0.01])
def test_float32_matches_float64_reference_variable_lengths(gamma):
    """float32 inputs: values and gradients are a float64 computation (by another backend) rounded to float32,
    far inside the required 1e-6 / 1e-5 (relative to the largest); padded frames get exactly 0 gradient."""
    x, y, xl, yl = unit_batch(0, [96, 61, 30], [88, 110, 27], d=32)
    reference = "numba" if _numba_available() else "torch"
    want = divergence_and_grads(x, y, xl, yl, gamma, reference, where=torch.device("cpu"))
    got = divergence_and_grads(x.float(), y.float(), xl, yl, gamma, "triton", where=device())
    rounding = 2e-7  # a few float32 ulps: costs, DP and chaining are float64 (TritonDP.cost_dtype)
    assert relative_error(got[0], want[0]) <= rounding
    assert relative_error(got[1], want[1]) <= rounding and relative_error(got[2], want[2]) <= rounding
    for grad, lengths in ((got[1], xl), (got[2], yl)):
        for b, n in enumerate(lengths.tolist()):
            assert torch.all(grad[b, n:] == 0) and grad[b, :n].abs().sum() > 0


# ----------------------------------------------------------------------------------------------
# Launch plans
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [soft_dtw, soft_dtw_divergence])
def test_launch_plans_give_identical_results(fn, monkeypatch):
    """One problem per program (the GPU plan), partial tiles of 2 and all problems in one program, with 4
    lanes (diagonals swept in chunks): every cell is computed by the same operations, so results are equal."""
    x, y, xl, yl = unit_batch(1, [9, 5, 7], [8, 10, 3], d=4)
    results = []
    for per_program, lanes in ((None, None), (1, 4), (2, 4)):
        if per_program is not None:
            monkeypatch.setattr(kernels(), "PROBLEMS_PER_PROGRAM", per_program)
            monkeypatch.setattr(kernels(), "MAX_BLOCK", lanes)
        results.append(divergence_and_grads(x, y, xl, yl, 0.1, "triton", fn=fn, where=device()))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)
    want = divergence_and_grads(x, y, xl, yl, 0.1, "torch", fn=fn, where=torch.device("cpu"))
    for a, b in zip(results[0], want):
        assert (a - b).abs().max() <= 1e-10 * b.abs().max()


def test_launch_plan_on_gpu_is_one_problem_per_program():
    grid, launch = kernels().launch_plan([500] * 24, [450] * 24, torch.device("cuda"))
    assert grid == (24,) and launch["PB"] == 1 and launch["BLOCK"] == 512 and launch["num_stages"] == 1
    grid, launch = kernels().launch_plan([2200, 40], [1900, 35], torch.device("cuda"))
    assert grid == (2,) and launch["BLOCK"] == kernels().MAX_BLOCK  # longer diagonals: chunks of MAX_BLOCK


# ----------------------------------------------------------------------------------------------
# First-use self-check
# ----------------------------------------------------------------------------------------------


class _OffByOnePerMille(dispatch._CostLevel):
    """The Triton backend with values 0.1 % too large: what a miscompiled kernel could return."""

    def __init__(self):
        super().__init__(kernels().TritonDP)

    def forward(self, *args):
        values, state = super().forward(*args)
        return [v * 1.001 for v in values], state


class _Failing(dispatch._CostLevel):
    def __init__(self):
        super().__init__(kernels().TritonDP)

    def forward(self, *args):
        raise RuntimeError("ptxas fatal: unsupported GPU architecture")


def test_self_check_runs_once_per_device_and_dtype(monkeypatch):
    monkeypatch.setattr(dispatch, "_SELF_CHECKED", set())
    x, y, xl, yl = unit_batch(2, [4, 3], [5, 2], d=3, dtype=torch.float32)
    soft_dtw_divergence(x.to(device()), y.to(device()), xl, yl, backend="triton")
    assert dispatch._SELF_CHECKED == {("triton", str(device()), torch.float32)}
    value_error, grad_error = dispatch.self_check_errors(dispatch._CostLevel(kernels().TritonDP), device(),
                                                         torch.float32)
    assert value_error <= 1e-6 and grad_error <= 1e-5


@pytest.mark.parametrize("broken, expected", [(_OffByOnePerMille, r"relative error 1\.\de-03 in the values"),
                                              (_Failing, "ptxas fatal: unsupported GPU architecture")])
def test_self_check_failure_names_backend_error_and_way_out(monkeypatch, broken, expected):
    monkeypatch.setattr(dispatch, "_SELF_CHECKED", set())
    with pytest.raises(RuntimeError, match=expected) as failure:
        dispatch._self_check_once("triton", broken(), device(), torch.float32)
    message = str(failure.value)
    assert "soft-DTW backend 'triton' failed its first-use self-check" in message
    assert message.endswith(
        "Use the pure-PyTorch backend instead: criterion.soft_dtw_backend=torch in a fairseq run "
        "(backend='torch' in Python), and please report this with your GPU, driver and triton versions."
    )
    assert not dispatch._SELF_CHECKED


# ----------------------------------------------------------------------------------------------
# What 'auto' picks
# ----------------------------------------------------------------------------------------------


def test_auto_picks_installed_backends_only(monkeypatch):
    assert auto_backend("cpu") == ("numba" if _numba_available() else "torch")
    assert auto_backend("cuda") == ("triton" if torch.version.hip is None else "torch")
    assert auto_backend("mps") == "torch"
    monkeypatch.setattr(dispatch, "_triton_available", lambda: False)
    monkeypatch.setattr(dispatch, "_numba_available", lambda: False)
    assert auto_backend("cuda") == "torch" and auto_backend("cpu") == "torch"
    with pytest.raises(ValueError, match="needs the triton package"):
        soft_dtw(torch.randn(1, 3, 2), torch.randn(1, 4, 2), backend="triton")


def test_auto_never_picks_triton_for_cpu_tensors():
    x, y, xl, yl = unit_batch(3, [6, 3], [4, 8], d=3)
    got = soft_dtw_divergence(x, y, xl, yl, backend="auto")
    want = soft_dtw_divergence(x, y, xl, yl, backend=auto_backend("cpu"))
    assert auto_backend("cpu") != "triton" and torch.equal(got, want)


def test_cpu_tensors_are_refused_when_the_kernels_are_compiled_not_interpreted(monkeypatch):
    monkeypatch.setattr(kernels(), "interpreted", lambda: False)
    with pytest.raises(ValueError, match=r"backend='triton' needs CUDA tensors, got device cpu"):
        soft_dtw(torch.randn(1, 3, 2), torch.randn(1, 4, 2), backend="triton")


def test_cuda_tensors_pass_the_device_check_of_a_compiled_triton(monkeypatch):
    monkeypatch.setattr(kernels(), "interpreted", lambda: False)
    monkeypatch.setattr(dispatch, "_self_check_once", lambda *args: None)  # no GPU here to run it on
    impl = dispatch._triton_backend(torch.device("cuda", 0), torch.float32)
    assert impl.dp is kernels().TritonDP


def test_removed_cuda_backend_names_its_replacement():
    with pytest.raises(ValueError, match="replaced by 'triton'"):
        soft_dtw(torch.randn(1, 3, 2), torch.randn(1, 4, 2), backend="cuda")


# ----------------------------------------------------------------------------------------------
# The GPU code itself
# ----------------------------------------------------------------------------------------------


def test_kernels_compile_for_h100_without_a_gpu():
    """Triton's bundled LLVM + ptxas build both kernels for sm_90, as a GPU run would (float64 costs)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    code = textwrap.dedent("""
        from laser_fairseq.losses import soft_dtw_triton as k
        assert not k.interpreted()
        sizes = k.compile_for(90)
        assert sizes["forward"] > 10000 and sizes["backward"] > 10000, sizes
        print("COMPILED")
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "COMPILED" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-4000:]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_long_pairs_match_float64_and_self_check_is_fast():
    """On a GPU: pairs longer than the lanes of a program (> 1,024 frames) against float64 on the CPU, and
    the self-check (kernels already compiled) within 50 ms."""
    import time

    x, y, xl, yl = unit_batch(4, [1300, 300, 40], [1100, 1250, 40], d=16)
    want = divergence_and_grads(x, y, xl, yl, 0.1, "numba" if _numba_available() else "torch",
                                where=torch.device("cpu"))
    got = divergence_and_grads(x.float(), y.float(), xl, yl, 0.1, "auto", where=torch.device("cuda"))
    assert relative_error(got[0], want[0]) <= 1e-6
    assert relative_error(got[1], want[1]) <= 1e-5 and relative_error(got[2], want[2]) <= 1e-5
    impl = dispatch._CostLevel(kernels().TritonDP)
    torch.cuda.synchronize()
    start = time.perf_counter()
    dispatch.self_check_errors(impl, torch.device("cuda"), torch.float32)
    torch.cuda.synchronize()
    assert time.perf_counter() - start <= 0.05
