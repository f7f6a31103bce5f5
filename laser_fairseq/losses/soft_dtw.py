"""Soft-DTW and the soft-DTW divergence for padded, variable-length batches.

Definitions (LASER's objective, examples/laser/README.md), per pair, over the valid frames only::

    C_ij = ||x_i - y_j||^2
    R_ij = C_ij + softmin_g(R_{i-1,j-1}, R_{i-1,j}, R_{i,j-1}),  R_00 = 0,  R_0j = R_i0 = +inf
    softmin_g(a, b, c) = -g log(exp(-a/g) + exp(-b/g) + exp(-c/g))
    sdtw(x, y) = R_nm
    D(x, y) = sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2        (not divided by length)

Structure: one ``torch.autograd.Function`` per call; its forward builds the cost matrices with
matmuls (``||x||^2 + ||y||^2 - 2 x y^T``, never a (B, N, M, d) broadcast) and runs the DP of all
problems (xy, and xx, yy for the divergence, each with its own lengths) in one backend call; its
backward is Cuturi & Blondel's E-matrix recursion (d R_nm / d C_ij = E_ij) chained back to x and y
by hand with matmuls. Padded frames are zeroed on entry and their cells never visited, so their
gradient is exactly 0. float16/bfloat16 inputs are computed in float32 and the result is cast
back; float64 stays float64. Borders use a large finite value instead of +inf
(:data:`laser_fairseq.losses.soft_dtw_torch.BIG`).

Backends, one module each: ``"torch"`` (pure PyTorch, anti-diagonal wavefront vectorised over problems
and the diagonal, any device, :mod:`laser_fairseq.losses.soft_dtw_torch`), ``"numba"`` (CPU kernel, :mod:`laser_fairseq.losses.soft_dtw_numba`),
``"triton"`` (GPU kernel, :mod:`laser_fairseq.losses.soft_dtw_triton`; checked against the torch
backend once per device and dtype before its first use), ``"auto"`` (:func:`auto_backend`: triton
for CUDA tensors, numba on CPU, torch otherwise, each only when the install provides its pieces).

CPU performance note: torch's OpenMP worker threads spin for a while after each parallel op and
then compete with the kernel's threads; on a machine with few cores, ``OMP_WAIT_POLICY=PASSIVE``
in the environment (before torch is imported) removes that (measured: ~300 ms -> ~140 ms per
divergence fwd+bwd at the reference size on 2 busy cores). It is a process setting, so this
module does not set it. Thread count of the CPU kernel: see
:func:`laser_fairseq.losses.soft_dtw_numba.kernel_threads_set`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from laser_fairseq.losses.pairwise import squared_distances
from laser_fairseq.losses.soft_dtw_torch import TorchDP

BACKENDS = ("auto", "torch", "numba", "triton")
# backends that existed once, and what replaced them (named in the error a stale config gets)
REMOVED_BACKENDS = {"cuda": "the numba.cuda kernel was replaced by 'triton' (what 'auto' picks for CUDA tensors)"}


# ----------------------------------------------------------------------------------------------
# Input checking
# ----------------------------------------------------------------------------------------------


def _check_lengths(lengths: Optional[torch.Tensor], name: str, batch: int, max_len: int,
                   device: torch.device) -> torch.Tensor:
    """Validate a ``(B,)`` length tensor (or build the full lengths) -> ``(B,)`` int64 on ``device``."""
    if lengths is None:
        return torch.full((batch,), max_len, dtype=torch.long, device=device)
    if not isinstance(lengths, torch.Tensor):
        raise ValueError(f"{name} must be a (B,) integer tensor, got {type(lengths).__name__}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"{name} must have shape ({batch},), got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {lengths.dtype}")
    if batch > 0:
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > max_len:
            raise ValueError(f"{name} must lie in [1, {max_len}] (the padded length), got min {lo}, "
                             f"max {hi}")
    return lengths.to(device=device, dtype=torch.long)


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    """Validate ``x (B, N, d)`` and ``y (B, M, d)``."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 3:
            raise ValueError(f"{name} must have shape (B, T, d), got {tuple(t.shape)}")
        if not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
        if t.shape[1] < 1:
            raise ValueError(f"{name} must have at least one frame, got shape {tuple(t.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same batch size, got x {tuple(x.shape)}, y {tuple(y.shape)}")
    if x.shape[2] != y.shape[2]:
        raise ValueError(f"x and y must have the same feature size, got x {tuple(x.shape)}, "
                         f"y {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not gamma > 0.0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    return gamma


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything else (half, bfloat16, float32) is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------
# Backend selection and the autograd Function
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _numba_available() -> bool:
    """True when numba and the CPU kernel module import."""
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        importlib.import_module("laser_fairseq.losses.soft_dtw_numba")
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=None)
def _triton_available() -> bool:
    """True when Triton and its NVIDIA backend (which bundles ptxas and libdevice) are installed."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton.backends
    except ImportError:
        return False
    return "nvidia" in triton.backends.backends


def auto_backend(device_type: str) -> str:
    """The backend ``"auto"`` picks for tensors on ``device_type`` ("cpu", "cuda", ...).

    Only backends whose pieces the install provides: ``triton`` for CUDA tensors when Triton with
    its NVIDIA backend is installed (not on ROCm builds of torch, where it is unproven), ``numba``
    for CPU tensors when numba imports, otherwise ``torch`` (runs anywhere).
    """
    if device_type == "cuda" and torch.version.hip is None and _triton_available():
        return "triton"
    if device_type == "cpu" and _numba_available():
        return "numba"
    return "torch"


def _resolve_backend(backend: str, device: torch.device, dtype: torch.dtype):
    """Backend name -> pair-level backend object (see :class:`_CostLevel` for the contract).

    ``dtype`` is the compute dtype (float32 or float64): the Triton backend is self-checked once per
    device and dtype before its first use.
    """
    if backend in REMOVED_BACKENDS:
        raise ValueError(f"backend={backend!r} no longer exists: {REMOVED_BACKENDS[backend]}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = auto_backend(device.type)
    if backend == "torch":
        return _CostLevel(TorchDP)
    if backend == "numba":
        if device.type != "cpu":
            raise ValueError(f"backend='numba' needs CPU tensors, got device {device}")
        from laser_fairseq.losses.soft_dtw_numba import NumbaSoftDTW
        return NumbaSoftDTW
    return _triton_backend(device, dtype)


def _triton_backend(device: torch.device, dtype: torch.dtype) -> "_CostLevel":
    """The Triton backend for ``device``, self-checked there once per dtype."""
    if not _triton_available():
        raise ValueError("backend='triton' needs the triton package with its NVIDIA backend (installed with "
                         "torch's CUDA wheels on Linux); use backend='torch' (criterion.soft_dtw_backend=torch)")
    from laser_fairseq.losses import soft_dtw_triton

    if device.type != "cuda" and not soft_dtw_triton.interpreted():
        raise ValueError(f"backend='triton' needs CUDA tensors, got device {device} (on CPU it runs only under "
                         "Triton's interpreter: TRITON_INTERPRET=1 set before the kernels are imported)")
    impl = _CostLevel(soft_dtw_triton.TritonDP)
    _self_check_once("triton", impl, device, dtype)
    return impl


# ----------------------------------------------------------------------------------------------
# First-use self-check of a compiled backend
# ----------------------------------------------------------------------------------------------

# relative error limits (of the values, and of the gradients, each against its largest entry): a
# correct float32 kernel is ~1e-6 off a float64 computation, a broken one is off by O(1)
SELF_CHECK_LIMITS = {torch.float32: 1e-4, torch.float64: 1e-9}
_SELF_CHECKED: set = set()


def _self_check_once(name: str, impl, device: torch.device, dtype: torch.dtype) -> None:
    """Compare ``impl`` with the torch backend on a small random problem, once per process, device and
    dtype; raise a RuntimeError naming the backend, the error and the way out."""
    key = (name, str(device), dtype)
    if key in _SELF_CHECKED:
        return
    way_out = ("Use the pure-PyTorch backend instead: criterion.soft_dtw_backend=torch in a fairseq run "
               "(backend='torch' in Python), and please report this with your GPU, driver and triton versions.")
    try:
        value_error, grad_error = self_check_errors(impl, device, dtype)
    except Exception as error:  # compilation or launch failure: same way out
        raise RuntimeError(f"soft-DTW backend {name!r} failed its first-use self-check on {device} ({dtype}): "
                           f"{type(error).__name__}: {error}. {way_out}") from error
    limit = SELF_CHECK_LIMITS[dtype]
    if not (value_error <= limit and grad_error <= limit):  # also catches NaN
        raise RuntimeError(f"soft-DTW backend {name!r} failed its first-use self-check on {device} ({dtype}): "
                           f"relative error {value_error:.1e} in the values and {grad_error:.1e} in the gradients "
                           f"against the torch backend in float64 (limit {limit:.0e}). {way_out}")
    _SELF_CHECKED.add(key)


def self_check_errors(impl, device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """Relative errors (values, gradients) of ``impl`` in ``dtype`` against ``TorchDP`` in float64, on ``device``.

    The problem: 2 pairs of unit-norm frames, d = 8, lengths (16, 9) x (12, 14), padded, gamma 0.1,
    divergence; errors are max |a - b| / max |b| over the values and over both gradients.
    """
    g = torch.Generator().manual_seed(20261202)
    x = F.normalize(torch.randn(2, 16, 8, generator=g, dtype=torch.float64), dim=-1)
    y = F.normalize(torch.randn(2, 14, 8, generator=g, dtype=torch.float64), dim=-1)
    xl, yl = torch.tensor([16, 9], device=device), torch.tensor([12, 14], device=device)
    x, y = _masked(x.to(device), xl), _masked(y.to(device), yl)
    weights = torch.tensor([1.0, -0.5], dtype=torch.float64, device=device)

    def run(backend, dtype):
        xd, yd = x.to(dtype).requires_grad_(True), y.to(dtype).requires_grad_(True)
        values = _SoftDTWFunction.apply(xd, yd, xl, yl, 0.1, backend, True)
        grads = torch.autograd.grad((values * weights.to(dtype)).sum(), (xd, yd))
        return [t.detach().to(torch.float64) for t in (values, *grads)]

    got = run(impl, dtype)
    want = run(_CostLevel(TorchDP), torch.float64)

    def relative(a, b):
        return float((a - b).abs().max() / b.abs().max())

    return relative(got[0], want[0]), max(relative(got[1], want[1]), relative(got[2], want[2]))


def _cross_grad(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of ``sum_ij g_ij ||a_i - b_j||^2``: ``(2 (rowsum(g) a - g b), 2 (colsum(g) b - g^T a))``.

    g: ``(B, N, M)``, a: ``(B, N, d)``, b: ``(B, M, d)``.
    """
    ga = torch.baddbmm(g.sum(2, keepdim=True) * a, g, b, alpha=-1.0)
    gb = torch.baddbmm(g.sum(1).unsqueeze(2) * b, g.transpose(1, 2), a, alpha=-1.0)
    return 2.0 * ga, 2.0 * gb


def _self_grad(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Gradient of ``sum_ij g_ij ||a_i - a_j||^2`` given ``s = g + g^T (B, N, N)``: ``2 (rowsum(s) a - s a)``."""
    return 2.0 * torch.baddbmm(s.sum(2, keepdim=True) * a, s, a, alpha=-1.0)


class _CostLevel:
    """Pair-level backend built from a cost-level DP (``TorchDP``, ``TritonDP``).

    Pair-level contract (what :class:`_SoftDTWFunction` calls):
    ``forward(x, y, x_lengths, y_lengths, divergence, gamma) -> (values, state)``, values a list of
    ``(B,)`` tensors (xy, plus xx and yy for the divergence); ``backward(state, grads, x, y) ->
    (grad_x, grad_y)`` given d loss / d values. Here the costs are built with matmuls
    (:func:`squared_distances`) and the gradient is chained back by hand: 4 matmuls instead of the
    6 autograd would run for the divergence, since the xx and yy problems are symmetric.

    A DP class may set ``cost_dtype``: costs and the chaining are then computed in that dtype
    (float64 for the Triton backend) and the gradients returned in the input dtype.
    """

    def __init__(self, dp):
        self.dp = dp

    def _work(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(getattr(self.dp, "cost_dtype", None) or t.dtype)

    def forward(self, x, y, x_lengths, y_lengths, divergence: bool, gamma: float):
        x, y = self._work(x), self._work(y)

        def cost(a, b):
            return squared_distances(a, b, out=self.dp.empty((a.shape[0], a.shape[1], b.shape[1]), a.dtype, a.device))

        costs = [cost(x, y)]
        rows, cols, sym = [x_lengths], [y_lengths], [False]
        if divergence:
            costs += [cost(x, x), cost(y, y)]
            rows += [x_lengths, y_lengths]
            cols += [x_lengths, y_lengths]
            sym += [True, True]
        values, state = self.dp.forward(costs, rows, cols, sym, gamma)
        return values, (state, divergence)

    def backward(self, state, grads, x, y):
        state, divergence = state
        mats = self.dp.backward(state, grads)
        xw, yw = self._work(x), self._work(y)
        grad_x, grad_y = _cross_grad(mats[0], xw, yw)
        if divergence:
            grad_x = grad_x + _self_grad(mats[1], xw)
            grad_y = grad_y + _self_grad(mats[2], yw)
        return grad_x.to(x.dtype), grad_y.to(y.dtype)


class _SoftDTWFunction(torch.autograd.Function):
    """soft-DTW values (``divergence=False``) or divergences of padded pairs, differentiable in x and y.

    x ``(B, N, d)``, y ``(B, M, d)`` (float32 or float64, padding zeroed), lengths ``(B,)``; the
    backend follows the pair-level contract of :class:`_CostLevel`. Returns ``(B,)`` float64 or
    the backend's dtype.
    """

    @staticmethod
    def forward(ctx, x, y, x_lengths, y_lengths, gamma, backend, divergence):
        values, state = backend.forward(x, y, x_lengths, y_lengths, divergence, gamma)
        ctx.backend, ctx.state, ctx.divergence = backend, state, divergence
        ctx.save_for_backward(x, y)
        if divergence:
            return values[0] - 0.5 * (values[1] + values[2])
        return values[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        grad = grad.to(x.dtype)
        grads = [grad, -0.5 * grad, -0.5 * grad] if ctx.divergence else [grad]
        grad_x, grad_y = ctx.backend.backward(ctx.state, grads, x, y)
        return grad_x, grad_y, None, None, None, None, None


def _run(x, y, x_lengths, y_lengths, gamma, backend, divergence):
    """Validate, cast, mask, and apply the Function -> ``(B,)`` in the input dtype."""
    if x.dim() == 3 and x.shape[0] == 0:
        _check_pair(x, y)
        return x.new_zeros((0,))
    x, y, xl, yl, gamma, out_dtype = _prepare(x, y, x_lengths, y_lengths, gamma)
    impl = _resolve_backend(backend, x.device, x.dtype)
    return _SoftDTWFunction.apply(x, y, xl, yl, gamma, impl, divergence).to(out_dtype)


def _masked(t: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero the padded frames of ``t (B, T, d)`` (so inf/NaN padding cannot leak), trimmed to max length."""
    t_max = int(lengths.max())
    t = t[:, :t_max]
    keep = torch.arange(t_max, device=t.device)[None, :] < lengths[:, None]
    return torch.where(keep[:, :, None], t, torch.zeros((), dtype=t.dtype, device=t.device))


def _prepare(x, y, x_lengths, y_lengths, gamma):
    """Validate and normalise inputs -> (x, y, x_lengths, y_lengths, gamma, out_dtype)."""
    _check_pair(x, y)
    gamma = _check_gamma(gamma)
    batch = x.shape[0]
    x_lengths = _check_lengths(x_lengths, "x_lengths", batch, x.shape[1], x.device)
    y_lengths = _check_lengths(y_lengths, "y_lengths", batch, y.shape[1], y.device)
    out_dtype = torch.promote_types(x.dtype, y.dtype)
    work = _compute_dtype(out_dtype)
    x = _masked(x.to(work), x_lengths)
    y = _masked(y.to(work), y_lengths)
    return x, y, x_lengths, y_lengths, gamma, out_dtype


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def soft_dtw(x: torch.Tensor, y: torch.Tensor, x_lengths: Optional[torch.Tensor] = None,
             y_lengths: Optional[torch.Tensor] = None, gamma: float = 0.1,
             backend: str = "auto") -> torch.Tensor:
    """Soft-DTW value ``sdtw_gamma(x_b, y_b)`` of every pair, over its valid frames.

    Args:
        x: ``(B, N, d)`` padded sequences.
        y: ``(B, M, d)`` padded sequences.
        x_lengths: ``(B,)`` integer numbers of valid frames of ``x`` (``None``: all ``N``).
        y_lengths: ``(B,)`` integer numbers of valid frames of ``y`` (``None``: all ``M``).
        gamma: softmin temperature, > 0.
        backend: ``"auto"``, ``"torch"``, ``"numba"`` or ``"triton"``.

    Returns:
        ``(B,)`` values in the dtype of the inputs (half precision is computed in float32).
        Differentiable w.r.t. ``x`` and ``y``; the gradient is exactly 0 at padded frames.
    """
    return _run(x, y, x_lengths, y_lengths, gamma, backend, divergence=False)


def soft_dtw_divergence(x: torch.Tensor, y: torch.Tensor, x_lengths: Optional[torch.Tensor] = None,
                        y_lengths: Optional[torch.Tensor] = None, gamma: float = 0.1,
                        backend: str = "auto") -> torch.Tensor:
    """Soft-DTW divergence ``sdtw(x, y) - (sdtw(x, x) + sdtw(y, y)) / 2`` of every pair.

    Not divided by length. The three problems (xy, xx, yy) of all pairs run in one DP call.

    Args:
        x: ``(B, N, d)`` padded sequences.
        y: ``(B, M, d)`` padded sequences.
        x_lengths: ``(B,)`` integer numbers of valid frames of ``x`` (``None``: all ``N``).
        y_lengths: ``(B,)`` integer numbers of valid frames of ``y`` (``None``: all ``M``).
        gamma: softmin temperature, > 0.
        backend: ``"auto"``, ``"torch"``, ``"numba"`` or ``"triton"``.

    Returns:
        ``(B,)`` divergences in the dtype of the inputs (half precision is computed in float32).
        Differentiable w.r.t. ``x`` and ``y``; the gradient is exactly 0 at padded frames.
    """
    return _run(x, y, x_lengths, y_lengths, gamma, backend, divergence=True)
