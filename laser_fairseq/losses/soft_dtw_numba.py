"""numba CPU kernel for the soft-DTW dynamic programme (backend ``"numba"``).

Design (its speed against other implementations: docs/soft_dtw.md):

* torch computes the dot products (3 bmm forward, 2 bmm backward); the kernel forms the costs
  ``||a||^2 + ||b||^2 - 2 <a, b>`` while it reads them, and writes the gradient matrices directly
  in the concatenated form ``[G_xy | S_xx]``, ``[G_xy^T | S_yy]`` with their row sums, so the
  backward is ``2 (rowsum * x - [G_xy | S_xx] @ [y; x])`` (and the same for y): no elementwise
  pass over any N x M matrix outside the kernel;
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

Threads: the kernel runs its per-thread problem lists on plain Python threads (numba code without
the GIL), ``torch.get_num_threads()`` of them unless :func:`kernel_threads_set` (a context manager
restoring the previous value) says otherwise. numba's own OpenMP threading layer is not used, so
its worker threads cannot spin against torch's OpenMP threads, and no process-wide setting
(threading layer, OMP_WAIT_POLICY, flush-to-zero mode) is changed. Thread count does not change
results: each problem is computed by one thread, always the same way.
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np
import torch
from llvmlite import ir
from numba import njit
from numba.core import types
from numba.extending import intrinsic, overload

from laser_fairseq.losses.soft_dtw_torch import BIG

_FASTMATH = {"contract", "arcp", "nsz"}


_THREADS: list = [None]  # None: follow torch.get_num_threads()
_POOLS: dict = {}


def kernel_threads() -> int:
    """Threads the kernel uses now: the :func:`kernel_threads_set` value, else torch's thread count."""
    return max(1, _THREADS[0] or torch.get_num_threads())


@contextlib.contextmanager
def kernel_threads_set(n: int | None) -> Iterator[None]:
    """Run the kernel with ``n`` threads inside the block (``None``: follow torch), then restore.

    The kernel's threads are plain Python threads running GIL-free numba code, so no second
    OpenMP runtime spins against torch's (which tripled matmul times on 2 cores), and nothing
    process-wide (threading layer, OMP_WAIT_POLICY, flush-to-zero) is touched. Results do not
    depend on the thread count: every problem is computed by one thread, the same way.
    """
    previous = _THREADS[0]
    _THREADS[0] = n
    try:
        yield
    finally:
        _THREADS[0] = previous


def _run_workers(worker, plan: np.ndarray, *args) -> None:
    """``worker(plan[w], *args)`` for every row of the plan, rows in parallel threads."""
    if plan.shape[0] == 1:
        worker(plan[0], *args)
        return
    pool = _POOLS.get(plan.shape[0])
    if pool is None:
        pool = _POOLS[plan.shape[0]] = ThreadPoolExecutor(plan.shape[0], thread_name_prefix="soft_dtw")
    for future in [pool.submit(worker, plan[w], *args) for w in range(plan.shape[0])]:
        future.result()


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
def _forward_one(D, stride, a2, b2, n, m, sym, gamma, wd, wu, wl, off, p2, p1, cur, cost):
    """Forward DP of one ``(n, m)`` problem; stores the softmin weights at ``off``; returns R_nm.

    D: flat row-major dot products ``<a_i, b_j>`` (row length ``stride >= m``); a2/b2: squared
    norms; the cost ``max(a2_i + b2_j - 2 D_ij, 0)`` is formed while gathering each diagonal (no
    separate pass over a cost matrix). wd/wu/wl: flat weight storage, cell ``(i, k - i)`` of
    diagonal ``k`` at ``off_k + i - lo_k``, diagonals packed one after the other. p2/p1/cur:
    ``(>= n + 2,)`` scratch rows indexed by ``i`` (diagonals k - 2, k - 1, k); cost: ``(>= n,)``.

    Values are kept small: diagonal k is computed relative to ``base_k`` (float64), the running
    sum of the diagonal minima, and stored relative to ``base_{k-1}`` (the shifts are applied when
    the next diagonals read it, which saves a pass). R itself grows to hundreds along a path, and
    float32 differences of such values would lose ~1e-4 of the softmin weights at gamma = 0.1.
    """
    zero, two, big = _like(gamma, 0.0), _like(gamma, 2.0), _like(gamma, BIG)
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
            cost[t] = max(a2[lo - 1 + t] + b2[k - 1 - lo - t] - two * D[start + t * (stride - 1)], zero)
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
def _backward_one(n, m, sym, g, wd, wu, wl, off_end, G, stride, col0, GT, stride_t, col0_t, rows_sum, cols_sum,
                  pd2, pd1, pd0, pu1, pu0, pl1, pl0, ek):
    """E recursion of one problem, written as its block of the gradient matrices, plus row sums.

    Writes ``g * E`` into the block of ``G`` starting at column ``col0`` (row length ``stride``);
    for a non-symmetric problem with a non-empty ``GT`` also its transpose into ``GT``; for a
    symmetric problem ``2 g E`` on both triangles, i.e. the block of ``S = G + G^T``. Adds the
    written values of each row to ``rows_sum`` (and, non-symmetric, of each column to
    ``cols_sum``). pdX/puX/plX: ``(>= n + 2,)`` scratch rows holding ``w * E`` products of
    diagonals k+2, k+1, k; ek: ``(>= n,)`` scratch.
    """
    zero, one, two = _like(g, 0.0), _like(g, 1.0), _like(g, 2.0)
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
    transpose = GT.shape[0] > 0 and not sym
    off = off_end
    for k in range(n + m, 1, -1):
        lo, hi = _diag_bounds(k, n, m, sym)
        cnt = hi - lo + 1
        off -= cnt
        _occupancy_diag(pd2[lo + 1:hi + 2], pu1[lo + 1:hi + 2], pl1[lo:hi + 1], wd[off:off + cnt],
                        wu[off:off + cnt], wl[off:off + cnt], ek[:cnt], pd0[lo:hi + 1], pu0[lo:hi + 1],
                        pl0[lo:hi + 1])
        for t in range(cnt):
            ek[t] *= scale
        i0, j0 = lo - 1, k - 1 - lo  # 0-based cell of t = 0; cell t is (i0 + t, j0 - t)
        start = i0 * stride + col0 + j0
        for t in range(cnt):  # strided scatter into the gradient matrix
            G[start + t * (stride - 1)] = ek[t]
        for t in range(cnt):
            rows_sum[i0 + t] += ek[t]
        if sym:
            start = j0 * stride + col0 + i0
            for t in range(cnt):
                G[start - t * (stride - 1)] = ek[t]
            for t in range(cnt):
                if i0 + t != j0 - t:
                    rows_sum[j0 - t] += ek[t]
        else:
            for t in range(cnt):
                cols_sum[j0 - t] += ek[t]
            if transpose:
                start = j0 * stride_t + col0_t + i0
                for t in range(cnt):
                    GT[start - t * (stride_t - 1)] = ek[t]
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


@njit(nogil=True, cache=True)
def _scratch_width(problems, t):
    """Length of the scratch rows for the listed problems (ids; -1 = none): their most rows, plus 2."""
    width = 2
    for q in range(problems.shape[0]):
        if problems[q] >= 0:
            width = max(width, t[problems[q], 0] + 2)
    return width


@njit(nogil=True, cache=True)
def _forward_worker(problems, t, D, norms, gamma, wd, wu, wl, values):
    """Forward DP of the listed problems (ids; -1 = none); ``values[p] = R_nm`` (float64).

    t: ``(P, 8)`` int64 table, per problem ``rows, cols, symmetric, weight offset, dots offset,
    dots row length, norms offset of the rows' sequence, of the columns' sequence``. D: flat dot
    products, every problem's ``rows x cols`` block at its offset; norms: flat squared norms;
    wd/wu/wl: flat weight storage. Releases the GIL.
    """
    width = _scratch_width(problems, t)
    s = np.empty((4, width), D.dtype)
    for q in range(problems.shape[0]):
        p = problems[q]
        if p < 0:
            break
        n, m, sym = t[p, 0], t[p, 1], t[p, 2] != 0
        values[p] = _forward_one(D[t[p, 4]:], t[p, 5], norms[t[p, 6]:], norms[t[p, 7]:], n, m, sym, gamma, wd, wu, wl,
                                 t[p, 3], s[0], s[1], s[2], s[3])


@njit(nogil=True, cache=True)
def _backward_worker(problems, t, G, sums, grads, wd, wu, wl):
    """E recursions of the listed problems into their gradient blocks, and row / column sums.

    t: ``(P, 13)`` int64 table, per problem ``rows, cols, symmetric, weight offset, cells,
    target offset, target row length, target column offset, transposed-target offset (-1 none),
    its row length, its column offset, row-sums offset, column-sums offset (-1 none)``. G: flat
    buffer holding all targets; sums: flat row / column sums (zero-initialised). Releases the GIL.
    """
    width = _scratch_width(problems, t)
    s = np.empty((8, width), G.dtype)
    for q in range(problems.shape[0]):
        p = problems[q]
        if p < 0:
            break
        n, m, sym = t[p, 0], t[p, 1], t[p, 2] != 0
        gt = G[t[p, 8]:] if t[p, 8] >= 0 else G[:0]
        cs = sums[t[p, 12]:] if t[p, 12] >= 0 else sums[:0]
        _backward_one(n, m, sym, grads[p], wd, wu, wl, t[p, 3] + t[p, 4], G[t[p, 5]:], t[p, 6], t[p, 7], gt, t[p, 9],
                      t[p, 10], sums[t[p, 11]:], cs, s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])


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


def empty_cpu(shape, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Uninitialised CPU tensor backed by numpy memory.

    numpy asks the kernel for transparent huge pages on large arrays; the first touch of a fresh
    22 MB torch allocation costs ~10 ms of page faults here, the numpy one ~0.4 ms.
    """
    np_dtype = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    return torch.from_numpy(np.empty(shape, dtype=np_dtype))


def _packed_views(buf: torch.Tensor, shapes) -> list[torch.Tensor]:
    """Consecutive contiguous views of the given 2-D shapes in a flat buffer."""
    views, start = [], 0
    for r, c in shapes:
        views.append(buf[start:start + r * c].view(r, c))
        start += r * c
    return views


def _offsets(sizes) -> np.ndarray:
    out = np.zeros(len(sizes), dtype=np.int64)
    out[1:] = np.cumsum(sizes)[:-1]
    return out


class NumbaSoftDTW:
    """Pair-level backend: soft-DTW values / divergences and their gradients in x and y on the CPU.

    Contract (shared with the other backends in :mod:`laser_fairseq.losses.soft_dtw`):
    ``forward(x, y, x_lengths, y_lengths, divergence, gamma) -> (values, state)`` with values a
    list of ``(B,)`` float64 tensors (xy, and xx, yy for the divergence) and
    ``backward(state, grads, x, y) -> (grad_x, grad_y)`` given d loss / d values.

    x ``(B, N, d)`` and y ``(B, M, d)`` are float32 or float64 with zeroed padding. Every matrix is
    packed per pair at its real size (no padding anywhere): torch computes the dot products (one
    bmm per problem kind for equal lengths, one mm per pair otherwise), the kernel forms the costs,
    runs the DP, and writes ``[G_xy | S_xx]`` (n x (m + n)) and ``[G_xy^T | S_yy]`` (m x (n + m))
    per pair with their row sums; two more matmuls give the gradients. Work is proportional to
    the real frames, not the padded ones.
    """

    @staticmethod
    def forward(x: torch.Tensor, y: torch.Tensor, x_lengths: torch.Tensor, y_lengths: torch.Tensor,
                divergence: bool, gamma: float):
        dtype = np.float64 if x.dtype == torch.float64 else np.float32
        B, N, _ = x.shape
        M = y.shape[1]
        nx = x_lengths.numpy().astype(np.int64)
        ny = y_lengths.numpy().astype(np.int64)
        equal = bool((nx == N).all() and (ny == M).all())
        kinds = [(x, y, nx, ny, False)]
        if divergence:
            kinds += [(x, x, nx, nx, True), (y, y, ny, ny, True)]
        rows = np.concatenate([k[2] for k in kinds])
        cols = np.concatenate([k[3] for k in kinds])
        sym = np.concatenate([np.full(B, k[4]) for k in kinds])
        cells = np.where(sym, rows * (rows + 1) // 2, rows * cols)
        dot_off = _offsets(rows * cols)
        D = empty_cpu((int((rows * cols).sum()),), x.dtype)
        start = 0
        for a, b, ra, rb, _ in kinds:  # dot products, packed per pair
            if equal:
                torch.bmm(a, b.transpose(1, 2), out=D[start:start + B * a.shape[1] * b.shape[1]].view(B, a.shape[1],
                                                                                                      b.shape[1]))
            else:
                for i, out in enumerate(_packed_views(D[start:], zip(ra, rb))):
                    torch.mm(a[i, :ra[i]], b[i, :rb[i]].T, out=out)
            start += int((ra * rb).sum())
        norms = torch.cat([(x * x).sum(-1).reshape(-1), (y * y).sum(-1).reshape(-1)]).numpy()
        x_norm, y_norm = np.arange(B) * N, B * N + np.arange(B) * M
        norm_rows = np.concatenate([x_norm, x_norm, y_norm][:len(kinds)])
        norm_cols = np.concatenate([y_norm, x_norm, y_norm][:len(kinds)])
        w_off = _offsets(cells)
        table = np.stack([rows, cols, sym.astype(np.int64), w_off, dot_off, cols, norm_rows, norm_cols], axis=1)
        wd, wu, wl = (np.empty(int(cells.sum()), dtype=dtype) for _ in range(3))
        values = np.zeros(len(rows), dtype=np.float64)
        _run_workers(_forward_worker, _plan(cells, kernel_threads()), table, D.numpy(), norms, dtype(gamma), wd, wu,
                     wl, values)
        state = (nx, ny, rows, cols, sym, cells, w_off, wd, wu, wl, divergence, equal)
        return list(torch.from_numpy(values).split(B)), state

    @staticmethod
    def backward(state, grads: Sequence[torch.Tensor], x: torch.Tensor, y: torch.Tensor):
        nx, ny, rows, cols, sym, cells, w_off, wd, wu, wl, divergence, equal = state
        B, N, _ = x.shape
        M = y.shape[1]
        # targets: per pair A_b = [G_xy | S_xx] (n x (m + n)), then AT_b = [G_xy^T | S_yy] (m x (n + m))
        a_cols = nx + ny if divergence else ny
        a_off = _offsets(nx * a_cols)
        at_off = int((nx * a_cols).sum()) + _offsets(ny * (nx + ny))
        G = empty_cpu((int((nx * a_cols).sum() + (divergence and (ny * (nx + ny)).sum())),), x.dtype)
        sums = torch.zeros(B * (N + M) * (2 if divergence else 1), dtype=x.dtype)
        rs_xy, cs_xy = np.arange(B) * N, B * N + np.arange(B) * M
        rs_xx, rs_yy = B * (N + M) + np.arange(B) * N, B * (2 * N + M) + np.arange(B) * M
        none = np.full(B, -1)
        zero = np.zeros(B, dtype=np.int64)
        parts = [np.stack([a_off, a_cols, zero, at_off if divergence else none, nx + ny, zero, rs_xy, cs_xy], 1)]
        if divergence:
            parts += [np.stack([a_off, a_cols, ny, none, zero, zero, rs_xx, none], 1),
                      np.stack([at_off, nx + ny, nx, none, zero, zero, rs_yy, none], 1)]
        table = np.concatenate([np.stack([rows, cols, sym.astype(np.int64), w_off, cells], 1), np.concatenate(parts)],
                               axis=1)
        g = torch.cat([gr.to(x.dtype) for gr in grads]).numpy()
        _run_workers(_backward_worker, _plan(cells, kernel_threads()), table, G.numpy(), sums.numpy(), g, wd, wu, wl)
        rsx = sums[:B * N].view(B, N)
        rsy = sums[B * N:B * (N + M)].view(B, M)
        if divergence:
            rsx = rsx + sums[B * (N + M):B * (2 * N + M)].view(B, N)
            rsy = rsy + sums[B * (2 * N + M):].view(B, M)
        if equal:
            A = G[:B * N * int(a_cols[0])].view(B, N, int(a_cols[0]))
            if not divergence:
                return (2.0 * (rsx.unsqueeze(2) * x - torch.bmm(A, y)),
                        2.0 * (rsy.unsqueeze(2) * y - torch.bmm(A.transpose(1, 2), x)))
            AT = G[B * N * (N + M):].view(B, M, N + M)
            return (2.0 * (rsx.unsqueeze(2) * x - torch.bmm(A, torch.cat([y, x], dim=1))),
                    2.0 * (rsy.unsqueeze(2) * y - torch.bmm(AT, torch.cat([x, y], dim=1))))
        grad_x, grad_y = torch.zeros_like(x), torch.zeros_like(y)
        for b in range(B):
            n, m = int(nx[b]), int(ny[b])
            xb, yb = x[b, :n], y[b, :m]
            A = G[a_off[b]:a_off[b] + n * int(a_cols[b])].view(n, int(a_cols[b]))
            if divergence:
                AT = G[at_off[b]:at_off[b] + m * (n + m)].view(m, n + m)
                grad_x[b, :n] = 2.0 * (rsx[b, :n, None] * xb - A @ torch.cat([yb, xb]))
                grad_y[b, :m] = 2.0 * (rsy[b, :m, None] * yb - AT @ torch.cat([xb, yb]))
            else:
                grad_x[b, :n] = 2.0 * (rsx[b, :n, None] * xb - A @ yb)
                grad_y[b, :m] = 2.0 * (rsy[b, :m, None] * yb - A.T @ xb)
        return grad_x, grad_y
