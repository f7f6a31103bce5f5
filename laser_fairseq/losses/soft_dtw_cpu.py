"""numba CPU kernel for the soft-DTW dynamic programme (backend ``"numba"``).

Design (measured trade-offs in REFERENCE.md section 4):

* the cost matrices come from torch matmuls (:mod:`laser_fairseq.losses.soft_dtw`); this module only
  runs the DP;
* all problems of a call (for the divergence: xy, xx and yy of every pair, 3B problems, each with its
  own lengths) run in one kernel call; problems are spread over the threads by a greedy
  longest-first plan, so threads finish together and padded cells are never visited: the cost is
  proportional to the real cells;
* symmetric problems (xx, yy) only visit the triangle ``i <= j`` (R and E are symmetric there);
* each problem is swept by anti-diagonals (cells of one anti-diagonal are independent); the inner loop
  over a diagonal vectorises: float32 ``exp`` and ``log`` are written as arithmetic polynomials
  (numba's ``math.exp`` is a scalar libm call that LLVM cannot vectorise here);
* the forward stores the three softmin probabilities of every cell, so the backward (Cuturi &
  Blondel's E recursion) has no transcendental at all;
* the DP borders use a large finite value instead of +inf.

float32 numerics: exp is exact to ~1 ulp, and returns exactly 0 below ``exp(-41.6)`` (2^-60); the
backward drops alignment weights below 1e-15. Both keep every product in the normal float range, so
no denormal slow path is ever hit and no global floating-point (flush-to-zero) mode has to be
changed. The effect on results is far below float32 resolution (checked against a float64 reference
at 1e-4 relative in the tests). float64 inputs use an exact float64 kernel (``math.exp``/``math.log``,
no thresholds).

Threads: the kernel uses ``numba.get_num_threads()`` threads; :func:`numba_threads` is a context
manager that changes it and restores the previous value.
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Sequence

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic, overload

BIG = 1e10
_FASTMATH = {"contract", "arcp", "nsz"}


@contextlib.contextmanager
def numba_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` numba threads inside the block (``None``: leave unchanged), then restore."""
    if n is None:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------
# Vectorisable float32 exp / log
# ----------------------------------------------------------------------------------------------


@intrinsic
def _bits_to_float32(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (LLVM trunc + bitcast; vectorises)."""
    if not isinstance(bits, types.Integer):
        return None
    sig = types.float32(bits)

    def codegen(context, builder, signature, args):
        value = args[0]
        if bits.bitwidth > 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return sig, codegen


_F = np.float32
_LOG2E = _F(1.4426950408889634)
_LN2 = _F(0.6931471805599453)
_EXP_CUT = _F(-60.0)  # exp2 argument below which the result is 0 (2^-60 ~ 8.7e-19)
_HALF, _ONE, _TWO = _F(0.5), _F(1.0), _F(2.0)
_THREE_HALVES = _F(1.5)
# Taylor coefficients 1/k!, k = 2..7, for exp(g) on |g| <= ln(2)/2 (truncation error < 6e-9)
_C2, _C3, _C4, _C5, _C6, _C7 = (_F(1.0 / math.factorial(k)) for k in range(2, 8))
# atanh series 1/(2k+1), k = 1..4: log(s) = 2 atanh(z), z = (s - 1)/(s + 1), |z| <= 0.2 (error < 4e-9)
_A3, _A5, _A7, _A9 = (_F(1.0 / k) for k in (3, 5, 7, 9))


def _exp_f32(t):
    """``exp(t)`` for float32 ``t <= 0``: exact 1 at 0, exact 0 below 2^-60."""
    u = max(t * _LOG2E, _EXP_CUT - _ONE)
    n = np.floor(u + _HALF)
    g = (u - n) * _LN2
    p = _ONE + g * (_ONE + g * (_C2 + g * (_C3 + g * (_C4 + g * (_C5 + g * (_C6 + g * _C7))))))
    scale = _bits_to_float32((np.int32(n) + np.int32(127)) << np.int32(23))
    keep = np.float32(u > _EXP_CUT)  # arithmetic select: branch-free, so the loop vectorises
    return p * scale * keep


def _log_1_3_f32(s):
    """``log(s)`` for float32 ``s`` in [1, 3] (a softmin sum: one term is exactly 1)."""
    big = np.float32(s > _THREE_HALVES)  # 1 or 0; arithmetic select keeps the loop branch-free
    v = s * (_ONE - _HALF * big)
    z = (v - _ONE) / (v + _ONE)
    z2 = z * z
    return _TWO * z * (_ONE + z2 * (_A3 + z2 * (_A5 + z2 * (_A7 + z2 * _A9)))) + _LN2 * big


def _exp_f64(t):
    return math.exp(t)


def _log_f64(s):
    return math.log(s)


def _exp(t):
    """``exp(t)`` for ``t <= 0``: the polynomial float32 version or ``math.exp`` in float64."""


@overload(_exp, inline="always")
def _exp_overload(t):
    if t == types.float32:
        return _exp_f32
    return _exp_f64


def _log_softmin(s):
    """``log(s)`` of a softmin sum ``s`` in [1, 3]: polynomial in float32, ``math.log`` in float64."""


@overload(_log_softmin, inline="always")
def _log_softmin_overload(s):
    if s == types.float32:
        return _log_1_3_f32
    return _log_f64


def _like(ref, value):
    """``value`` converted to the float type of ``ref`` (keeps float32 arithmetic in float32)."""


@overload(_like, inline="always")
def _like_overload(ref, value):
    if ref == types.float32:
        return lambda ref, value: np.float32(value)
    return lambda ref, value: np.float64(value)


def _flush_level(ref):
    """Backward threshold below which E is set to 0: 1e-15 in float32 (no denormals), none in float64."""


@overload(_flush_level, inline="always")
def _flush_level_overload(ref):
    if ref == types.float32:
        return lambda ref: np.float32(1e-15)
    return lambda ref: np.float64(-1.0)


# ----------------------------------------------------------------------------------------------
# Kernels (compiled per dtype; cached on disk)
# ----------------------------------------------------------------------------------------------


@njit(fastmath={"nnan", "ninf", "nsz", "reassoc"}, cache=True)
def _diag_min(row):
    """``min(row)`` of a non-empty 1-D view.

    Eight independent accumulators (LLVM turns them into one SIMD register; a plain loop stays a
    serial chain of scalar mins). Exact: min is associative.
    """
    n = row.shape[0]
    a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = row[0]
    i = 0
    while i + 8 <= n:
        a0 = min(a0, row[i])
        a1 = min(a1, row[i + 1])
        a2 = min(a2, row[i + 2])
        a3 = min(a3, row[i + 3])
        a4 = min(a4, row[i + 4])
        a5 = min(a5, row[i + 5])
        a6 = min(a6, row[i + 6])
        a7 = min(a7, row[i + 7])
        i += 8
    out = min(min(min(a0, a1), min(a2, a3)), min(min(a4, a5), min(a6, a7)))
    while i < n:
        out = min(out, row[i])
        i += 1
    return out


@njit(inline="always")
def _diag_bounds(k, n, m, sym):
    """Rows ``[lo, hi]`` visited on anti-diagonal ``k`` (triangle ``i <= j`` if ``sym``)."""
    lo = max(1, k - m)
    hi = min(n, k - 1)
    if sym:
        hi = min(hi, k // 2)
    return lo, hi


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _softmin_diag(prev2, prev1_up, prev1_left, cost, shift2, shift1, gamma, out, wd, wu, wl):
    """One anti-diagonal: ``out = cost + softmin(prev2 + shift2, prev1_up + shift1, prev1_left + shift1)``.

    Also writes the three softmin weights.

    All arguments are equal-length contiguous 1-D views (a branch-free loop from 0 that LLVM
    vectorises; numba's float division check is off via ``error_model="numpy"``).
    """
    one = _like(gamma, 1.0)
    ig = one / gamma
    for t in range(out.shape[0]):
        a = prev2[t] + shift2
        b = prev1_up[t] + shift1
        c = prev1_left[t] + shift1
        r = min(min(a, b), c)
        ea = _exp((r - a) * ig)
        eb = _exp((r - b) * ig)
        ec = _exp((r - c) * ig)
        s = ea + eb + ec
        inv = one / s
        out[t] = cost[t] + (r - gamma * _log_softmin(s))
        wd[t] = ea * inv
        wu[t] = eb * inv
        wl[t] = ec * inv


@njit(error_model="numpy", cache=True)
def _forward_one(C, stride, n, m, sym, gamma, wd, wu, wl, off, p2, p1, cur, cost):
    """Forward DP of one ``(n, m)`` problem; stores the softmin weights at ``off``; returns R_nm.

    C: flat row-major costs, row length ``stride >= m``, at least ``n`` rows. wd/wu/wl: flat weight storage, cell ``(i, k - i)`` of diagonal
    ``k`` at ``off_k + i - lo_k``, diagonals packed one after the other. p2/p1/cur: ``(>= n + 2,)``
    scratch rows indexed by ``i`` (diagonals k - 2, k - 1, k); cost: ``(>= n,)`` scratch.

    Values are kept small: diagonal k is computed relative to ``base_k`` (float64), the running
    sum of the diagonal minima, and stored relative to ``base_{k-1}`` (the shifts are applied when
    the next diagonals read it, which saves a pass). R itself grows to hundreds along a path, and
    float32 differences of such values would lose ~1e-4 of the softmin weights at gamma = 0.1.
    """
    zero, big = _like(gamma, 0.0), _like(gamma, BIG)
    for i in range(n + 2):
        p2[i] = big
        p1[i] = big
        cur[i] = big
    p2[0] = zero  # R_00
    base3 = 0.0  # float64 bases of diagonals k - 3, k - 2, k - 1; diagonal d is stored relative
    base2 = 0.0  # to base_{d - 1}
    base1 = 0.0
    value = 0.0
    for k in range(2, n + m + 1):
        lo, hi = _diag_bounds(k, n, m, sym)
        cnt = hi - lo + 1
        start = (lo - 1) * stride + (k - 1 - lo)
        for t in range(cnt):  # strided gather of the diagonal's costs (kept out of the SIMD loop)
            cost[t] = C[start + t * (stride - 1)]
        # stored p2 is relative to base3, p1 to base2; compute relative to base1
        _softmin_diag(p2[lo - 1:hi], p1[lo - 1:hi], p1[lo:hi + 1], cost[:cnt], _like(gamma, base3 - base1),
                      _like(gamma, base2 - base1), gamma, cur[lo:hi + 1], wd[off:off + cnt], wu[off:off + cnt],
                      wl[off:off + cnt])
        off += cnt
        if sym and (k & 1) == 1:
            cur[hi + 1] = cur[hi]  # cell (i + 1, i) mirrors (i, i + 1): read by the next diagonal
        if k == n + m:
            value = base1 + cur[n]
        if k == 2:
            p2[0] = big
        base3, base2, base1 = base2, base1, base1 + _diag_min(cur[lo:hi + 1])
        p2, p1, cur = p1, cur, p2
    return value


@njit(fastmath=_FASTMATH, error_model="numpy", cache=True)
def _occupancy_diag(from_diag, from_up, from_left, wd, wu, wl, e_out, pd, pu, pl):
    """One anti-diagonal of the E recursion (contiguous equal-length views; vectorises).

    ``e = from_diag + from_up + from_left`` (tiny float32 values flushed to 0), then the products
    ``w * e`` each predecessor will read.
    """
    flush = _flush_level(wd[0])
    for t in range(e_out.shape[0]):
        e = from_diag[t] + from_up[t] + from_left[t]
        e = e * _like(e, e > flush)
        e_out[t] = e
        pd[t] = wd[t] * e
        pu[t] = wu[t] * e
        pl[t] = wl[t] * e


@njit(error_model="numpy", cache=True)
def _backward_one(G, stride, n, m, sym, g, wd, wu, wl, off_end, pd2, pd1, pd0, pu1, pu0, pl1, pl0, ek):
    """E recursion of one problem; writes ``g * E`` (``2 g E`` mirrored if ``sym``) into ``G``.

    G: flat row-major output, row length ``stride >= m``; every entry is written (0 outside the
    ``(n, m)`` block), so it needs no zero-initialisation. pdX/puX/plX: ``(>= n + 2,)`` scratch rows holding ``w * E`` products of diagonals k+2, k+1, k;
    ek: ``(>= n,)`` scratch.
    """
    zero, one, two = _like(g, 0.0), _like(g, 1.0), _like(g, 2.0)
    for i in range(n):
        for j in range(m, stride):
            G[i * stride + j] = zero
    for t in range(n * stride, G.shape[0]):
        G[t] = zero
    for i in range(n + 2):
        pd2[i] = zero
        pd1[i] = zero
        pd0[i] = zero
        pu1[i] = zero
        pu0[i] = zero
        pl1[i] = zero
        pl0[i] = zero
    pl1[n] = one  # seed: d R_nm / d R_nm, read by the last diagonal
    scale = two * g if sym else g
    off = off_end
    for k in range(n + m, 1, -1):
        lo, hi = _diag_bounds(k, n, m, sym)
        cnt = hi - lo + 1
        off -= cnt
        _occupancy_diag(pd2[lo + 1:hi + 2], pu1[lo + 1:hi + 2], pl1[lo:hi + 1], wd[off:off + cnt],
                        wu[off:off + cnt], wl[off:off + cnt], ek[:cnt], pd0[lo:hi + 1], pu0[lo:hi + 1],
                        pl0[lo:hi + 1])
        start = (lo - 1) * stride + (k - 1 - lo)
        for t in range(cnt):  # strided scatter into the gradient matrix
            G[start + t * (stride - 1)] = ek[t] * scale
        if sym:
            start = (k - 1 - lo) * stride + (lo - 1)
            for t in range(cnt):
                G[start - t * (stride - 1)] = ek[t] * scale
        pd0[lo - 1] = zero
        pu0[lo - 1] = zero
        pl0[lo - 1] = zero
        pd0[hi + 1] = zero
        pu0[hi + 1] = zero
        pl0[hi + 1] = zero
        if sym and (k & 1) == 1:
            pu0[hi + 1] = pl0[hi]  # mirrored cell (hi + 1, hi) passes E to (hi, hi) like (hi, hi + 1)
        pd2, pd1, pd0 = pd1, pd0, pd2
        pu1, pu0 = pu0, pu1
        pl1, pl0 = pl0, pl1


@njit(inline="always")
def _flat(a):
    """Flat view of a C-contiguous 2-D array."""
    return a.reshape(a.shape[0] * a.shape[1])


@njit(inline="always")
def _problem(p, B, axy, axx, ayy, nx, ny):
    """Problem ``p`` -> (its 2-D array, rows, cols, symmetric): kind ``p // B`` (xy, xx, yy), pair ``p % B``."""
    kind, b = p // B, p % B
    if kind == 0:
        return axy[b], nx[b], ny[b], False
    if kind == 1:
        return axx[b], nx[b], nx[b], True
    return ayy[b], ny[b], ny[b], True


@njit(parallel=True, cache=True)
def _forward_all(cxy, cxx, cyy, nx, ny, gamma, plan, offsets, wd, wu, wl, values):
    """Forward DP of all problems of a call; ``values[p] = R_nm`` (float64).

    cxy/cxx/cyy: ``(B, N, M)`` / ``(B, N, N)`` / ``(B, M, M)`` costs (xx/yy may be empty for plain
    soft-DTW); nx/ny: ``(B,)`` lengths; plan: ``(T, Q)`` problem ids per worker (-1 = none);
    offsets: ``(P,)`` start of each problem's weights in wd/wu/wl.
    """
    B = nx.shape[0]
    width = max(cxy.shape[1], cyy.shape[1]) + 2
    for w in prange(plan.shape[0]):
        scratch = np.empty((4, width), cxy.dtype)
        for q in range(plan.shape[1]):
            p = plan[w, q]
            if p < 0:
                break
            C, n, m, sym = _problem(p, B, cxy, cxx, cyy, nx, ny)
            values[p] = _forward_one(_flat(C), C.shape[1], n, m, sym, gamma, wd, wu, wl, offsets[p],
                                     scratch[0], scratch[1], scratch[2], scratch[3])


@njit(parallel=True, cache=True)
def _backward_all(gxy, gxx, gyy, nx, ny, grads, plan, offsets, sizes, wd, wu, wl):
    """E recursions of all problems into ``gxy/gxx/gyy`` (shaped like the costs, fully written)."""
    B = nx.shape[0]
    width = max(gxy.shape[1], gyy.shape[1]) + 2
    for w in prange(plan.shape[0]):
        s = np.empty((8, width), gxy.dtype)
        for q in range(plan.shape[1]):
            p = plan[w, q]
            if p < 0:
                break
            G, n, m, sym = _problem(p, B, gxy, gxx, gyy, nx, ny)
            _backward_one(_flat(G), G.shape[1], n, m, sym, grads[p], wd, wu, wl, offsets[p] + sizes[p],
                          s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])


# ----------------------------------------------------------------------------------------------
# Planning and the backend object
# ----------------------------------------------------------------------------------------------


def _plan(sizes: np.ndarray, workers: int) -> np.ndarray:
    """Greedy longest-first assignment of problems to workers -> ``(T, Q)`` int64, -1 padded."""
    workers = max(1, min(workers, len(sizes)))
    loads = np.zeros(workers)
    lists: list[list[int]] = [[] for _ in range(workers)]
    for p in np.argsort(-sizes, kind="stable"):
        w = int(np.argmin(loads))
        lists[w].append(int(p))
        loads[w] += sizes[p]
    plan = np.full((workers, max(len(l) for l in lists)), -1, dtype=np.int64)
    for w, l in enumerate(lists):
        plan[w, :len(l)] = l
    return plan


def _as_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def empty_cpu(shape, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Uninitialised CPU tensor backed by numpy memory.

    numpy asks the kernel for transparent huge pages on large arrays; the first touch of a fresh
    22 MB torch allocation costs ~10 ms of page faults here, the numpy one ~0.4 ms.
    """
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    return torch.from_numpy(np.empty(shape, dtype=np_dtype))


class NumbaDP:
    """DP backend (see ``_TorchDP`` in :mod:`laser_fairseq.losses.soft_dtw` for the contract).

    Accepts one batch (xy, non-symmetric) or three (xy; xx and yy symmetric) with rows/cols
    ``[x_len]/[y_len]`` or ``[x_len, x_len, y_len]/[y_len, x_len, y_len]``. float32 or float64.
    """

    empty = staticmethod(empty_cpu)

    @staticmethod
    def forward(costs: Sequence[torch.Tensor], rows, cols, symmetric, gamma: float):
        """costs: list of 1 or 3 ``(B, ., .)`` tensors -> (list of ``(B,)`` float64 values, state)."""
        tdtype = torch.float64 if costs[0].dtype == torch.float64 else torch.float32
        dtype = np.float64 if tdtype == torch.float64 else np.float32
        arrays = [_as_numpy(c.to(tdtype)) for c in costs]
        nx = _as_numpy(rows[0]).astype(np.int64)
        ny = _as_numpy(cols[0]).astype(np.int64)
        if len(arrays) == 3:
            if list(symmetric) != [False, True, True]:
                raise ValueError("NumbaDP expects the batches (xy, xx, yy)")
            sizes = np.concatenate([nx * ny, nx * (nx + 1) // 2, ny * (ny + 1) // 2])
        elif len(arrays) == 1:
            arrays += [np.zeros((0, 1, 1), dtype=dtype)] * 2
            sizes = nx * ny
        else:
            raise ValueError("NumbaDP expects 1 or 3 cost batches")
        offsets = np.zeros(len(sizes), dtype=np.int64)
        offsets[1:] = np.cumsum(sizes)[:-1]
        total = int(sizes.sum())
        wd, wu, wl = (np.empty(total, dtype=dtype) for _ in range(3))
        values = np.zeros(len(sizes), dtype=np.float64)
        plan = _plan(sizes, numba.get_num_threads())
        _forward_all(*arrays, nx, ny, dtype(gamma), plan, offsets, wd, wu, wl, values)
        shapes = [tuple(c.shape) for c in costs]
        state = (nx, ny, offsets, sizes, wd, wu, wl, shapes, tdtype)
        out = torch.from_numpy(values)  # float64: the divergence subtracts large, close values
        return list(out.split([s[0] for s in shapes])), state

    @staticmethod
    def backward(state, grads: Sequence[torch.Tensor]):
        """grads: list of ``(B,)`` -> list of ``G`` (xy) / ``G + G^T`` (xx, yy) matrices."""
        nx, ny, offsets, sizes, wd, wu, wl, shapes, tdtype = state
        mats = [empty_cpu(s, tdtype) for s in shapes]
        g = _as_numpy(torch.cat([gr.to(tdtype) for gr in grads]))
        arrays = [m.numpy() for m in mats]
        if len(arrays) == 1:
            arrays += [np.zeros((0, 1, 1), dtype=arrays[0].dtype)] * 2
        plan = _plan(sizes, numba.get_num_threads())  # threads may have changed since the forward
        _backward_all(*arrays, nx, ny, g, plan, offsets, sizes, wd, wu, wl)
        return mats
