"""Triton kernels for the soft-DTW dynamic programme (backend ``"triton"``, the GPU backend).

On a GPU, one Triton program per problem (for the divergence: xy, xx and yy of every pair, 3B
programs, each with its own lengths). A program sweeps its ``(n, m)`` problem by anti-diagonals; its
lanes cover a diagonal in chunks of ``BLOCK`` cells, so any length works (no 1024-frame cap), and a
barrier separates diagonals (cells of diagonal k read diagonal k - 1 and k - 2, written by other
threads). The kernels are written for a tile of ``PB`` problems per program (a row per problem);
a GPU runs ``PB = 1``, the interpreter a wider tile (see :func:`launch_plan`).

Storage: R is packed by anti-diagonal, the cells of diagonal k one after the other, so a diagonal's
predecessors are contiguous (coalesced loads) and only the ``n * m`` real cells exist: padding is
never allocated nor visited, and its gradient is exactly 0. The backward (Cuturi & Blondel's E
recursion) recomputes the softmin weights from R and the costs,
``w(p -> s) = exp((R_s - C_s - R_p) / gamma)``, and keeps E for three diagonals only.

Numerics: the whole DP (R, the softmin, the weights, E) runs in float64, and so do the cost matrices
and the chaining of the gradient back to x and y (``TritonDP.cost_dtype``); only the inputs and the
returned gradients are float32. R grows to hundreds or thousands along a path, and the softmin
weights are exponentials of differences of neighbouring R values divided by gamma: in float32 those
differences would lose ~1e-4 of relative accuracy at gamma = 0.1. The cost matmuls cancel
(``||x||^2 + ||y||^2 - 2 x.y``), so float32 costs alone cost ~1e-5 of relative gradient accuracy on
long pairs. In float64 all of this is exact to ~1e-12: float32 results are the float64 results
rounded. The DP is latency bound (one barrier per
diagonal), so float64 arithmetic should cost little even on GPUs with slow float64 units
(``scripts/gpu_check.py`` measures it). The exponentials and logarithms are libdevice's float64
functions (``tl.exp`` / ``tl.log`` of float64 never take the approximate float32 instructions).

On a GPU the kernels compile with Triton's bundled toolchain (ptxas, libdevice) and need only the
NVIDIA driver. Without a GPU they run under Triton's CPU interpreter when ``TRITON_INTERPRET=1`` is
set before this module is imported (slow; that is how the tests check them): the interpreter runs
programs one after the other, so its barrier is a no-op and CPU tensors are accepted.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

import torch
import triton
import triton.language as tl

from laser_fairseq.losses.soft_dtw_torch import BIG

MAX_BLOCK = 1024  # most lanes of a program; longer diagonals are swept in chunks
PROBLEMS_PER_PROGRAM = None  # None: 1 on a GPU, all (up to 64) under the interpreter (see launch_plan)


def interpreted() -> bool:
    """True when the kernels were built for Triton's CPU interpreter (``TRITON_INTERPRET=1``)."""
    return not isinstance(_forward_kernel, triton.runtime.JITFunction)


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _problems(c0, c1, c2, g0, g1, g2, strides, rows, cols, offsets, R, pairs, problems, PB: tl.constexpr):
    """The ``PB`` problems of this program, as ``(PB, 1)`` columns.

    Problem q is pair ``q % pairs`` of cost batch ``kind = q // pairs`` (``c0``, ``c1``, ``c2``, each
    ``(pairs, ., .)``, batch and row strides at ``strides[kind]`` of a (3, 2) int64 table); ids past
    ``problems`` get 0 x 0 cells. Returns (problem ids, cost pointers, gradient pointers, row strides,
    rows n, cols m, start of each packed R).
    """
    q = tl.program_id(0) * PB + tl.arange(0, PB)[:, None]
    real = q < problems
    kind = q // pairs
    batch_offset = (q - kind * pairs) * tl.load(strides + 2 * kind, mask=real, other=0)
    row_stride = tl.load(strides + 2 * kind + 1, mask=real, other=1).to(tl.int32)
    cost = tl.where(kind == 0, c0 + batch_offset, tl.where(kind == 1, c1 + batch_offset, c2 + batch_offset))
    grad = tl.where(kind == 0, g0 + batch_offset, tl.where(kind == 1, g1 + batch_offset, g2 + batch_offset))
    n = tl.load(rows + q, mask=real, other=0)
    m = tl.load(cols + q, mask=real, other=0)
    return q, cost, grad, row_stride, n, m, R + tl.load(offsets + q, mask=real, other=0)


@triton.jit
def _forward_kernel(c0, c1, c2, strides, rows, cols, offsets, R, values, gamma_ptr, pairs, problems,
                    BIG_: tl.constexpr, PB: tl.constexpr, BLOCK: tl.constexpr):
    """R of this program's problems (see :func:`_problems`), packed by anti-diagonal, and ``values[q] = R_nm``.

    Cell ``(i, j)`` of diagonal ``k = i + j`` sits at ``off_k + i - lo_k`` (``lo_k``: its first row).
    Tensors are ``(PB, BLOCK)``: a row per problem, a lane per cell of the current diagonal chunk.
    """
    q, cost, _, row_stride, n, m, rp = _problems(c0, c1, c2, c0, c1, c2, strides, rows, cols, offsets, R, pairs,
                                                 problems, PB)
    gamma = tl.load(gamma_ptr)
    inv_gamma = 1.0 / gamma
    lanes = tl.arange(0, BLOCK)[None, :]
    step = row_stride - 1  # C[i - 1, j - 1] of diagonal k sits at cost + (k - 1 - row_stride) + i * step
    off = n * 0  # start of diagonal k, of k - 1 and of k - 2 in the packed storage, and their first rows
    off1 = n * 0
    lo1 = n * 0 + 1
    off2 = n * 0
    lo2 = n * 0 + 1
    for k in range(2, tl.max(n + m) + 1):
        lo = tl.maximum(k - m, 1)
        hi = tl.minimum(k - 1, n)  # hi < lo: this problem has no diagonal k
        hi_left = tl.minimum(hi, k - 2)  # rows whose cell has j >= 2
        corner = tl.where(k == 2, 0.0, BIG_)  # predecessor (0, 0) of cell (1, 1) is R_00 = 0, other borders +inf
        up_ptr = rp + (off1 - lo1 - 1)  # R[i - 1, j] at up_ptr + i, R[i, j - 1] at up_ptr + 1 + i
        left_ptr = up_ptr + 1
        diag_ptr = rp + (off2 - lo2 - 1)  # R[i - 1, j - 1] at diag_ptr + i
        cost_ptr = cost + (k - 1 - row_stride)
        out_ptr = rp + (off - lo)
        for start in range(0, tl.max(hi - lo + 1), BLOCK):
            i = lo + start + lanes
            live = i <= hi
            has_up = live & (i >= 2)
            has_left = i <= hi_left
            up = tl.load(up_ptr + i, mask=has_up, other=BIG_)
            left = tl.load(left_ptr + i, mask=has_left, other=BIG_)
            diag = tl.load(diag_ptr + i, mask=has_up & has_left, other=corner)
            c = tl.load(cost_ptr + i * step, mask=live, other=0.0).to(tl.float64)
            low = tl.minimum(tl.minimum(up, left), diag)
            total = (tl.exp((low - up) * inv_gamma) + tl.exp((low - left) * inv_gamma)
                     + tl.exp((low - diag) * inv_gamma))
            tl.store(out_ptr + i, c + (low - gamma * tl.log(total)), mask=live)
        tl.debug_barrier()  # diagonal k is complete before k + 1 reads it
        off2 = off1
        lo2 = lo1
        off1 = off
        lo1 = lo
        off = off + tl.maximum(hi - lo + 1, 0)
    real = q < problems
    tl.store(values + q, tl.load(rp + n * m - 1, mask=real, other=0.0), mask=real)


@triton.jit
def _backward_kernel(c0, c1, c2, strides, g0, g1, g2, rows, cols, offsets, R, E, e_width, grads, gamma_ptr,
                     pairs, problems, PB: tl.constexpr, BLOCK: tl.constexpr):
    """``G[i - 1, j - 1] = grads[q] * E_ij`` over the real cells of this program's problems.

    Costs, rows, cols, offsets and R as in :func:`_forward_kernel`; ``g0, g1, g2``: zeroed gradient
    matrices with the strides of the cost batches; ``E``: ``(P, 3, e_width)`` float64 scratch holding
    E of diagonals k, k + 1, k + 2 (slot ``k % 3``), indexed by row.
    """
    q, cost, grad, row_stride, n, m, rp = _problems(c0, c1, c2, g0, g1, g2, strides, rows, cols, offsets, R,
                                                    pairs, problems, PB)
    real = q < problems
    inv_gamma = 1.0 / tl.load(gamma_ptr)
    g = tl.load(grads + q, mask=real, other=0.0)
    ep = E + q * 3 * e_width
    lanes = tl.arange(0, BLOCK)[None, :]
    step = row_stride - 1
    off1 = n * m  # start of diagonal k + 1 (none yet: the end of the storage), its first row, same for k + 2
    lo1 = n + 0
    off2 = n * m
    lo2 = n + 0
    last = tl.max(n + m)
    for t in range(0, last - 1):
        k = last - t
        lo = tl.maximum(k - m, 1)
        hi = tl.minimum(k - 1, n)  # hi < lo: this problem has no diagonal k
        off = off1 - tl.maximum(hi - lo + 1, 0)
        down_hi = tl.minimum(hi, n - 1)  # rows with a successor (i + 1, j)
        right_lo = k - m + 1  # rows with a successor (i, j + 1)
        seed = tl.where(k == n + m, 1.0, 0.0)  # d R_nm / d R_nm
        # successors (i + 1, j) and (i, j + 1) on diagonal k + 1, (i + 1, j + 1) on k + 2: R, C and E of each
        r_down = rp + (off1 - lo1 + 1)
        r_right = r_down - 1
        r_diag = rp + (off2 - lo2 + 1)
        c_down = cost + (k - 1)  # + i * step
        c_right = cost + (k - row_stride)
        c_diag = cost + k
        e_right = ep + ((k + 1) % 3) * e_width
        e_down = e_right + 1
        e_diag = ep + ((k + 2) % 3) * e_width + 1
        e_out = ep + (k % 3) * e_width
        r_own = rp + (off - lo)
        g_out = grad + (k - 1 - row_stride)
        for start in range(0, tl.max(hi - lo + 1), BLOCK):
            i = lo + start + lanes
            live = i <= hi
            has_down = live & (i <= down_hi)
            right_ok = i >= right_lo
            has_right = live & right_ok
            has_diag = has_down & right_ok
            ci = i * step
            r = tl.load(r_own + i, mask=live, other=0.0)
            # E_ij = sum over successors s of E_s * w(ij -> s), w = exp((R_s - C_s - R_ij) / gamma)
            w = tl.exp((tl.load(r_down + i, mask=has_down, other=0.0)
                        - tl.load(c_down + ci, mask=has_down, other=0.0).to(tl.float64) - r) * inv_gamma)
            e = tl.where(has_down, tl.load(e_down + i, mask=has_down, other=0.0) * w, seed)
            w = tl.exp((tl.load(r_right + i, mask=has_right, other=0.0)
                        - tl.load(c_right + ci, mask=has_right, other=0.0).to(tl.float64) - r) * inv_gamma)
            e += tl.where(has_right, tl.load(e_right + i, mask=has_right, other=0.0) * w, 0.0)
            w = tl.exp((tl.load(r_diag + i, mask=has_diag, other=0.0)
                        - tl.load(c_diag + ci, mask=has_diag, other=0.0).to(tl.float64) - r) * inv_gamma)
            e += tl.where(has_diag, tl.load(e_diag + i, mask=has_diag, other=0.0) * w, 0.0)
            tl.store(e_out + i, e, mask=live)
            tl.store(g_out + ci, e * g, mask=live)
        tl.debug_barrier()  # E of diagonal k is complete before k - 1 reads it
        off2 = off1
        lo2 = lo1
        off1 = off
        lo1 = lo


# ----------------------------------------------------------------------------------------------
# Launch helpers
# ----------------------------------------------------------------------------------------------


def launch_plan(rows: list[int], cols: list[int], device: torch.device) -> tuple[tuple[int], dict]:
    """Grid and launch arguments for problems of ``rows x cols`` cells on ``device``.

    ``PB`` problems per program: 1 on a GPU (one program per problem, the programs run in parallel
    on the streaming multiprocessors); under the interpreter, which runs programs one after the
    other at a fixed cost per operation, all problems in one program (up to 64) - the same kernel
    code with a wider tile. :data:`PROBLEMS_PER_PROGRAM` overrides the choice.
    ``BLOCK`` lanes: the longest diagonal rounded up to a power of two, within [16, MAX_BLOCK].
    ``num_warps``: more warps hide more memory latency; ``num_stages=1``: the loops carry a
    barrier-separated dependence through global memory that a software pipeliner must not
    prefetch across.
    """
    problems = len(rows)
    per_program = PROBLEMS_PER_PROGRAM or (1 if device.type == "cuda" else min(64, problems))
    per_program = triton.next_power_of_2(per_program)
    longest = max(min(n, m) for n, m in zip(rows, cols))
    block = max(min(16, MAX_BLOCK), min(MAX_BLOCK, triton.next_power_of_2(longest)))
    grid = (triton.cdiv(problems, per_program),)
    return grid, {"problems": problems, "PB": per_program, "BLOCK": block, **_compile_options(per_program, block)}


def _compile_options(per_program: int, block: int) -> dict:
    """``num_warps``: 2 to 4 cells per thread (more warps hide more memory latency), at most 8;
    ``num_stages=1``: no software pipelining (see :func:`launch_plan`)."""
    return {"num_warps": max(1, min(8, per_program * block // 64)), "num_stages": 1}


def _cost_args(costs: Sequence[torch.Tensor]) -> list:
    """Three cost tensors (the first repeated when there is one) and their ``(3, 2)`` batch / row strides."""
    padded = list(costs) + [costs[0]] * (3 - len(costs))
    strides = torch.tensor([[c.stride(0), c.stride(1)] for c in padded], dtype=torch.int64, device=costs[0].device)
    return padded + [strides]


def _check_index_range(costs: Sequence[torch.Tensor], cells: list[int]) -> None:
    """Offsets inside one problem are int32 in the kernels (cheaper than int64 on a GPU)."""
    largest = max(max(cells), *(c.stride(0) for c in costs))
    if largest >= 2 ** 31:
        raise ValueError(f"backend='triton': one soft-DTW problem has {largest} cells, more than its int32 indices "
                         f"address (2^31); use backend='torch' for such sequences")


def _on_device(device: torch.device):
    """Make ``device`` current for the launch (Triton launches on the current CUDA device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Backend object
# ----------------------------------------------------------------------------------------------


class TritonDP:
    """Cost-level DP backend (the contract of :class:`laser_fairseq.losses.soft_dtw_torch.TorchDP`).

    Accepts one cost batch (xy) or three (xy, xx, yy) of ``(B, ., .)`` float32 / float64 tensors
    with ``(B,)`` lengths; symmetric batches are computed as full problems.
    """

    # Costs (and the chaining of the gradient back to x and y) in float64 for float32 inputs too: the
    # cancellation in ||x||^2 + ||y||^2 - 2 x.y leaves float32 costs ~1e-6 off (exact zeros on the xx / yy
    # diagonals come out as noise), which alone put float32 gradients ~1e-5 (relative) off a float64
    # computation at lengths 200-800; the matmuls are a small part of the loss on a GPU.
    cost_dtype = torch.float64

    @staticmethod
    def empty(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        return torch.empty(shape, dtype=dtype, device=device)

    @staticmethod
    def forward(costs: Sequence[torch.Tensor], rows, cols, symmetric, gamma: float):
        """-> (list of ``(B,)`` float64 values, state for :meth:`backward`)."""
        if len(costs) not in (1, 3):
            raise ValueError(f"TritonDP expects 1 or 3 cost batches, got {len(costs)}")
        device = costs[0].device
        pairs = costs[0].shape[0]
        costs = [c.contiguous() for c in costs]
        n = torch.cat(list(rows)).to(device=device, dtype=torch.int32)
        m = torch.cat(list(cols)).to(device=device, dtype=torch.int32)
        n_host, m_host = n.tolist(), m.tolist()
        cells = [a * b for a, b in zip(n_host, m_host)]
        _check_index_range(costs, cells)
        offsets = torch.tensor([sum(cells[:p]) for p in range(len(cells))], dtype=torch.int64, device=device)
        R = torch.empty(sum(cells), dtype=torch.float64, device=device)
        values = torch.empty(len(cells), dtype=torch.float64, device=device)
        gamma_t = torch.tensor([float(gamma)], dtype=torch.float64, device=device)
        grid, launch = launch_plan(n_host, m_host, device)
        with _on_device(device):
            _forward_kernel[grid](*_cost_args(costs), n, m, offsets, R, values, gamma_t, pairs, BIG_=BIG, **launch)
        state = (costs, n, m, offsets, R, gamma_t, pairs, list(symmetric), grid, launch, max(n_host))
        return list(values.split(pairs)), state

    @staticmethod
    def backward(state, grads: Sequence[torch.Tensor]):
        """grads: list of ``(B,)`` -> list of ``G`` (xy) / ``G + G^T`` (xx, yy) matrices, 0 outside the lengths."""
        costs, n, m, offsets, R, gamma_t, pairs, symmetric, grid, launch, longest = state
        device = R.device
        mats = [torch.zeros_like(c) for c in costs]
        e_width = longest + 2
        E = torch.empty((n.shape[0], 3, e_width), dtype=torch.float64, device=device)
        g = torch.cat([gr.to(device=device, dtype=torch.float64) for gr in grads])
        padded_mats = mats + [mats[0]] * (3 - len(mats))
        with _on_device(device):
            _backward_kernel[grid](*_cost_args(costs), *padded_mats, n, m, offsets, R, E, e_width, g, gamma_t, pairs,
                                   **launch)
        return [mt + mt.transpose(1, 2) if sym else mt for mt, sym in zip(mats, symmetric)]


# ----------------------------------------------------------------------------------------------
# Ahead-of-time compilation (proves the GPU code builds without a GPU)
# ----------------------------------------------------------------------------------------------


def compile_for(capability: int = 90, dtype: str = "fp64", block: int = MAX_BLOCK) -> dict[str, int]:
    """Compile both kernels for CUDA compute capability ``capability`` (90: H100 / H200) with Triton's
    bundled toolchain (LLVM, ptxas, libdevice), no GPU needed -> cubin size in bytes per kernel.

    With the defaults, exactly what a GPU run compiles (float64 costs, see ``TritonDP.cost_dtype``, one
    problem per program, the most lanes); ``dtype="fp32"`` for float32 cost matrices. Raises when
    compilation fails. Not available under the interpreter.
    """
    if interpreted():
        raise RuntimeError("compile_for needs the compiled kernels: unset TRITON_INTERPRET before importing "
                           f"{__name__}")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    cost, index, real = f"*{dtype}", "*i32", "*fp64"
    plan = {"PB": 1, "BLOCK": block}
    common = {"c0": cost, "c1": cost, "c2": cost, "strides": "*i64"}
    signatures = {
        "forward": (_forward_kernel, {**common, "rows": index, "cols": index, "offsets": "*i64", "R": real,
                                      "values": real, "gamma_ptr": real, "pairs": "i32", "problems": "i32",
                                      "BIG_": "constexpr", "PB": "constexpr", "BLOCK": "constexpr"},
                    {**plan, "BIG_": BIG}),
        "backward": (_backward_kernel, {**common, "g0": cost, "g1": cost, "g2": cost, "rows": index, "cols": index,
                                        "offsets": "*i64", "R": real, "E": real, "e_width": "i32", "grads": real,
                                        "gamma_ptr": real, "pairs": "i32", "problems": "i32", "PB": "constexpr",
                                        "BLOCK": "constexpr"}, plan),
    }
    target = GPUTarget("cuda", capability, 32)
    options = _compile_options(1, block)
    sizes = {}
    for name, (kernel, signature, constexprs) in signatures.items():
        compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs), target=target,
                                  options=options)
        sizes[name] = len(compiled.asm["cubin"])
    return sizes
