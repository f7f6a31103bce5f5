#!/usr/bin/env python
"""Benchmarks of the soft-DTW divergence (forward + backward, CPU) against public implementations.

Every implementation gets the same float32 inputs in the same process and is timed on the full
job the training criterion needs: the three cost matrices (xy, xx, yy), the three soft-DTW
values, the divergence, and the gradient back into x and y. Reported: median wall time over
``--repeats`` runs after ``--warmup`` runs, the ratio to our numba kernel, and the maximum
absolute error of the divergences and of the gradients against a float64 computation.

Implementations:
  ours (numba)     laser_fairseq.losses.soft_dtw_divergence(backend="numba"), one batched call
  ours (torch)     the same with backend="torch" (pure PyTorch wavefront)
  pysdtw (CPU)     pysdtw.SoftDTW(use_cuda=False), matmul cost, three calls (xy, xx, yy)
  tslearn          tslearn.metrics.SoftDTWLossPyTorch(normalize=True) given a matmul cost
  authors' recipe  re-implemented here: float64 numba DP with inf borders, cost built by
                   broadcasting to (N, M, d), CPU round trip, one pair (and problem) at a time
pysdtw and tslearn are optional: "not installed" is printed when they do not import.
Implementations without length support (tslearn, the authors' recipe) run pair by pair on the
trimmed sequences in the variable-length section.

Sections (``--sections``): ``reference`` (B x N x M x d, equal lengths) and ``variable`` (lengths
drawn uniformly in [--min-len, --max-len], padded). Each section is one function returning table
rows, registered in SECTIONS, so further sections (e.g. a training step) slot in beside them.

Settings: ``--threads`` sets both torch's and numba's thread counts for the whole process;
``--omp-wait-policy passive`` sets OMP_WAIT_POLICY before torch is imported (torch's and numba's
OpenMP runtimes otherwise spin against each other on few cores); ``--flush-denormal`` calls
torch.set_flush_denormal(True) for the whole process (our kernels never produce denormals; other
implementations' gradient matmuls may slow down on them).

Results: ``--out DIR`` also writes DIR/soft_dtw.json (every row's numbers and timings, the command, date,
machine, load average before/after and versions; laser_fairseq/bench_results.py). ``make bench`` writes the
committed benchmarks/results/soft_dtw.json, from which docs/soft_dtw.md and README.md quote.

Example:
  python scripts/benchmark.py --threads 2 --repeats 7
  python scripts/benchmark.py --skip-slow --sections variable --out outputs/bench
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# ----------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8, help="pairs per batch (B)")
    p.add_argument("--n", type=int, default=500, help="frames of x (N), reference section")
    p.add_argument("--m", type=int, default=450, help="frames of y (M), reference section")
    p.add_argument("--dim", type=int, default=256, help="feature size (d)")
    p.add_argument("--gamma", type=float, default=0.1, help="soft-DTW temperature")
    p.add_argument("--min-len", type=int, default=200, help="shortest sequence, variable section")
    p.add_argument("--max-len", type=int, default=800, help="longest sequence, variable section")
    p.add_argument("--repeats", type=int, default=7, help="timed runs per implementation (median)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (JIT compilation etc.)")
    p.add_argument("--slow-repeats", type=int, default=1,
                   help="timed runs for the slow implementations (authors' recipe, pure torch)")
    p.add_argument("--threads", type=int, default=2, help="torch and numba threads")
    p.add_argument("--skip-slow", action="store_true", help="skip the authors' recipe and the pure-torch path")
    p.add_argument("--sections", nargs="+", default=["reference", "variable"], help="which sections to run")
    p.add_argument("--omp-wait-policy", choices=["default", "passive", "active"], default="default",
                   help="OMP_WAIT_POLICY to set before importing torch")
    p.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results to OUT/soft_dtw.json (make bench: benchmarks/results)")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# Inputs and measurement
# ----------------------------------------------------------------------------------------------


@dataclass
class Inputs:
    """One benchmark problem: x (B, N, d), y (B, M, d) float32, lengths (B,) int64."""

    x: "torch.Tensor"
    y: "torch.Tensor"
    x_lengths: "torch.Tensor"
    y_lengths: "torch.Tensor"
    gamma: float

    @property
    def equal_lengths(self) -> bool:
        return bool((self.x_lengths == self.x.shape[1]).all() and (self.y_lengths == self.y.shape[1]).all())


@dataclass
class Row:
    name: str
    median_ms: Optional[float]
    values_err: Optional[float] = None
    values_rel: Optional[float] = None
    grad_err: Optional[float] = None
    grad_rel: Optional[float] = None
    note: str = ""
    times_ms: list = field(default_factory=list)


def make_inputs(batch: int, x_lengths, y_lengths, dim: int, gamma: float, seed: int) -> Inputs:
    """L2-normalised frames (like the LASER head's output); y is a noisy, shorter view of x."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x_lengths = torch.as_tensor(x_lengths, dtype=torch.long)
    y_lengths = torch.as_tensor(y_lengths, dtype=torch.long)
    n, m = int(x_lengths.max()), int(y_lengths.max())
    x = torch.randn(batch, n, dim, generator=g)
    idx = torch.linspace(0, n - 1, m).round().long()
    y = x[:, idx] + 0.7 * torch.randn(batch, m, dim, generator=g)
    x = torch.nn.functional.normalize(x, dim=-1)
    y = torch.nn.functional.normalize(y, dim=-1)
    for b in range(batch):  # padding content must not matter
        x[b, x_lengths[b]:] = 0.0
        y[b, y_lengths[b]:] = 0.0
    return Inputs(x, y, x_lengths, y_lengths, gamma)


def run_once(fn: Callable, inp: Inputs):
    """Forward + backward of ``fn(x, y, x_lengths, y_lengths, gamma) -> (B,)`` -> (values, gx, gy)."""
    x = inp.x.clone().requires_grad_(True)
    y = inp.y.clone().requires_grad_(True)
    d = fn(x, y, inp.x_lengths, inp.y_lengths, inp.gamma)
    d.sum().backward()
    return d.detach(), x.grad, y.grad


def float64_reference(inp: Inputs, backend: str = "numba"):
    """Divergences and gradients in float64 on the CPU (default: our numba float64 kernel, exact DP, no
    thresholds)."""
    from laser_fairseq.losses import soft_dtw_divergence

    ref = Inputs(inp.x.double().cpu(), inp.y.double().cpu(), inp.x_lengths.cpu(), inp.y_lengths.cpu(), inp.gamma)
    return run_once(lambda x, y, xl, yl, g: soft_dtw_divergence(x, y, xl, yl, gamma=g, backend=backend), ref)


def errors(out, ref) -> tuple[float, float, float, float]:
    """Max |value error|, the same relative to max |value|, max |gradient error| over x and y, and
    the same relative to max |gradient|."""
    v, gx, gy = (t.double().cpu() for t in out)
    rv, rgx, rgy = ref
    v_err = float((v - rv).abs().max())
    g_err = max(float((gx - rgx).abs().max()), float((gy - rgy).abs().max()))
    g_max = max(float(rgx.abs().max()), float(rgy.abs().max()))
    return v_err, v_err / float(rv.abs().max()), g_err, g_err / g_max


# ----------------------------------------------------------------------------------------------
# Implementations: each factory returns fn(x, y, x_lengths, y_lengths, gamma) -> (B,) or a reason
# ----------------------------------------------------------------------------------------------


def per_pair(pair_fn: Callable) -> Callable:
    """Batch wrapper for implementations without length support: one call per trimmed pair."""
    import torch

    def fn(x, y, xl, yl, gamma):
        return torch.stack([pair_fn(x[b:b + 1, :xl[b]], y[b:b + 1, :yl[b]], gamma)[0] for b in range(x.shape[0])])

    return fn


def ours(backend: str):
    from laser_fairseq.losses import soft_dtw_divergence

    def factory():
        return lambda x, y, xl, yl, gamma: soft_dtw_divergence(x, y, xl, yl, gamma=gamma, backend=backend)

    return factory


def pysdtw_cpu():
    return pysdtw_divergence(use_cuda=False)


def pysdtw_divergence(use_cuda: bool):
    """pysdtw's divergence (three calls: xy, xx, yy) on its CPU or its CUDA (numba.cuda) kernel."""
    try:
        import pysdtw
    except ImportError:
        return "not installed"
    from torch.nn.utils.rnn import pack_padded_sequence

    cache = {}

    def fn(x, y, xl, yl, gamma):
        sdtw = cache.setdefault(gamma, pysdtw.SoftDTW(gamma=gamma, use_cuda=use_cuda))

        def packed(t, lengths):
            if bool((lengths == t.shape[1]).all()):
                return t
            return pack_padded_sequence(t, lengths, batch_first=True, enforce_sorted=False)

        px, py = packed(x, xl), packed(y, yl)
        return sdtw(px, py) - 0.5 * (sdtw(px, px) + sdtw(py, py))

    return fn


def tslearn_matmul():
    try:
        from tslearn.metrics import SoftDTWLossPyTorch
    except ImportError:
        return "not installed"

    from laser_fairseq.losses.pairwise import squared_distances

    cache = {}

    def pair(x, y, gamma):
        loss = cache.setdefault(gamma, SoftDTWLossPyTorch(gamma=gamma, normalize=True, dist_func=squared_distances))
        return loss(x, y)

    batched = per_pair(pair)

    def fn(x, y, xl, yl, gamma):
        if bool((xl == x.shape[1]).all() and (yl == y.shape[1]).all()):
            return pair(x, y, gamma)
        return batched(x, y, xl, yl, gamma)

    return fn


def _authors_kernels():
    """float64 numba DP in the style of the authors' code: scalar loops, inf borders, exp/log per cell."""
    import math

    import numba
    import numpy as np

    @numba.njit(cache=True)
    def forward(D, gamma):
        n, m = D.shape
        R = np.full((n + 2, m + 2), np.inf)
        R[0, 0] = 0.0
        for j in range(1, m + 1):
            for i in range(1, n + 1):
                r0 = -R[i - 1, j - 1] / gamma
                r1 = -R[i - 1, j] / gamma
                r2 = -R[i, j - 1] / gamma
                rmax = max(max(r0, r1), r2)
                rsum = math.exp(r0 - rmax) + math.exp(r1 - rmax) + math.exp(r2 - rmax)
                R[i, j] = D[i - 1, j - 1] - gamma * (math.log(rsum) + rmax)
        return R

    @numba.njit(cache=True)
    def backward(D_, R, gamma):
        n, m = D_.shape
        D = np.zeros((n + 2, m + 2))
        E = np.zeros((n + 2, m + 2))
        D[1:n + 1, 1:m + 1] = D_
        E[n + 1, m + 1] = 1.0
        R[:, m + 1] = -np.inf
        R[n + 1, :] = -np.inf
        R[n + 1, m + 1] = R[n, m]
        for j in range(m, 0, -1):
            for i in range(n, 0, -1):
                a = math.exp((R[i + 1, j] - R[i, j] - D[i + 1, j]) / gamma)
                b = math.exp((R[i, j + 1] - R[i, j] - D[i, j + 1]) / gamma)
                c = math.exp((R[i + 1, j + 1] - R[i, j] - D[i + 1, j + 1]) / gamma)
                E[i, j] = E[i + 1, j] * a + E[i, j + 1] * b + E[i + 1, j + 1] * c
        return E[1:n + 1, 1:m + 1]

    return forward, backward


def authors_recipe():
    import torch

    forward, backward = _authors_kernels()

    class SoftDTW64(torch.autograd.Function):
        @staticmethod
        def forward(ctx, D, gamma):
            D64 = D.detach().cpu().double().numpy()
            R = forward(D64, gamma)
            ctx.save_for_backward(D)
            ctx.R, ctx.D64, ctx.gamma = R, D64, gamma
            return torch.tensor(R[D64.shape[0], D64.shape[1]], dtype=D.dtype)

        @staticmethod
        def backward(ctx, grad):
            E = backward(ctx.D64, ctx.R.copy(), ctx.gamma)
            return grad * torch.from_numpy(E).to(ctx.saved_tensors[0].dtype), None

    def cost(a, b):  # broadcast (N, M, d), as in the authors' code
        return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)

    def pair(x, y, gamma):
        x, y = x[0], y[0]
        xy = SoftDTW64.apply(cost(x, y), gamma)
        xx = SoftDTW64.apply(cost(x, x), gamma)
        yy = SoftDTW64.apply(cost(y, y), gamma)
        return (xy - 0.5 * (xx + yy))[None]

    return per_pair(pair)


IMPLEMENTATIONS = [
    # (name, factory, slow)
    ("ours (numba)", ours("numba"), False),
    ("ours (torch)", ours("torch"), True),
    ("pysdtw (CPU)", pysdtw_cpu, False),
    ("tslearn (matmul cost)", tslearn_matmul, False),
    ("authors' recipe (f64, broadcast)", authors_recipe, True),
]


# ----------------------------------------------------------------------------------------------
# Sections
# ----------------------------------------------------------------------------------------------


def compare(inp: Inputs, args, extra: Optional[list] = None) -> list[Row]:
    """Time every implementation on ``inp`` and compare with the float64 reference.

    Runs are interleaved round-robin (one run of each implementation per round), so a change of
    machine load during the benchmark affects all implementations alike. ``extra``: more
    ``(name, fn, inputs)`` to time in the same rounds (no error columns).
    """
    ref = float64_reference(inp)
    rows: dict[str, Row] = {}
    active = []  # (name, fn, inputs, slow)
    for name, factory, slow in IMPLEMENTATIONS:
        if slow and args.skip_slow:
            rows[name] = Row(name, None, note="skipped (--skip-slow)")
            continue
        fn = factory()
        if isinstance(fn, str):
            rows[name] = Row(name, None, note=fn)
            continue
        active.append((name, fn, inp, slow))
    for name, fn, other in extra or []:
        active.append((name, fn, other, False))
    times: dict[str, list[float]] = {name: [] for name, *_ in active}
    outputs = {}
    for name, fn, x, slow in active:  # warm-up (JIT compilation, caches)
        for _ in range(min(args.warmup, 1) if slow else args.warmup):
            outputs[name] = run_once(fn, x)
    for r in range(args.repeats):
        for name, fn, x, slow in active:
            if slow and r >= args.slow_repeats:
                continue
            t0 = time.perf_counter()
            outputs[name] = run_once(fn, x)
            times[name].append((time.perf_counter() - t0) * 1e3)
    for name, fn, x, slow in active:
        ms = statistics.median(times[name])
        note = f"median of {len(times[name])}, min {min(times[name]):.1f}"
        if x is inp:
            rows[name] = Row(name, ms, *errors(outputs[name], ref), note=note, times_ms=times[name])
        else:
            rows[name] = Row(name, ms, note=note, times_ms=times[name])
    ordered = [name for name, *_ in IMPLEMENTATIONS] + [name for name, *_ in (extra or [])]
    return [rows[name] for name in ordered if name in rows]


def bench_reference(args) -> tuple[str, list[Row]]:
    """Equal lengths, B x N x M x d (the issue's reference size by default)."""
    B = args.batch
    inp = make_inputs(B, [args.n] * B, [args.m] * B, args.dim, args.gamma, args.seed)
    cells = B * (args.n * args.m + args.n ** 2 + args.m ** 2)
    title = (f"reference: B={B}, N={args.n}, M={args.m}, d={args.dim}, gamma={args.gamma}, float32, "
             f"{args.threads} threads; {cells / 1e6:.2f} M DP cells (xy + xx + yy)")
    return title, compare(inp, args)


def bench_variable(args) -> tuple[str, list[Row]]:
    """Variable lengths in [min_len, max_len], padded to the longest."""
    import torch

    B = args.batch
    g = torch.Generator().manual_seed(args.seed + 1)
    xl = torch.randint(args.min_len, args.max_len + 1, (B,), generator=g)
    yl = torch.randint(args.min_len, args.max_len + 1, (B,), generator=g)
    inp = make_inputs(B, xl, yl, args.dim, args.gamma, args.seed)
    real = int((xl * yl + xl * xl + yl * yl).sum())
    padded = B * (3 * args.max_len ** 2)
    title = (f"variable lengths: B={B}, lengths in [{args.min_len}, {args.max_len}] (x: {xl.tolist()}, "
             f"y: {yl.tolist()}), padded to {int(xl.max())}/{int(yl.max())}, d={args.dim}; "
             f"{real / 1e6:.2f} M real DP cells of {padded / 1e6:.2f} M at full padding")
    # proportionality: ours on equal-length batches with the same number of real cells, and unpadded
    side = int(round((real / (3 * B)) ** 0.5))
    eq = make_inputs(B, [side] * B, [side] * B, args.dim, args.gamma, args.seed)
    full = make_inputs(B, [args.max_len] * B, [args.max_len] * B, args.dim, args.gamma, args.seed)
    extra = [(f"ours (numba), equal {side}x{side} (same real cells)", ours("numba")(), eq),
             (f"ours (numba), equal {args.max_len}x{args.max_len} (all cells real)", ours("numba")(), full)]
    return title, compare(inp, args, extra)


SECTIONS: dict[str, Callable] = {
    "reference": bench_reference,
    "variable": bench_variable,
}


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def format_table(title: str, rows: list[Row]) -> str:
    """The markdown table of one section (as docs/soft_dtw.md quotes it)."""
    base = next((r.median_ms for r in rows if r.name == "ours (numba)" and r.median_ms), None)

    def num(v, fmt, width):
        return format(v, fmt).rjust(width) if v is not None else "-".rjust(width)

    lines = [f"## {title}", "",
             "| implementation | median ms | vs ours | max abs err value | rel | max abs err grad | rel | note |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        ratio = f"{r.median_ms / base:.2f}x" if (r.median_ms and base) else "-"
        lines.append(f"| {r.name} | {num(r.median_ms, '.1f', 9)} | {ratio:>7} | {num(r.values_err, '.2e', 9)} | "
                     f"{num(r.values_rel, '.1e', 7)} | {num(r.grad_err, '.2e', 9)} | {num(r.grad_rel, '.1e', 7)} | "
                     f"{r.note} |")
    return "\n".join(lines)


def print_table(title: str, rows: list[Row]) -> None:
    print("\n" + format_table(title, rows))


def section_result(title: str, rows: list[Row]) -> dict:
    """One section as stored in soft_dtw.json: its title and rows, each with ``vs_ours`` (median / ours') and
    ``min_ms`` (the fastest of its runs)."""
    base = next((r.median_ms for r in rows if r.name == "ours (numba)" and r.median_ms), None)
    return {"title": title,
            "rows": [{**asdict(r), "vs_ours": (r.median_ms / base if (r.median_ms and base) else None),
                      "min_ms": min(r.times_ms) if r.times_ms else None}
                     for r in rows]}


def rows_of(section: dict) -> list[Row]:
    """The rows of a stored section (``section_result``) back as ``Row``s."""
    names = set(Row.__dataclass_fields__)
    return [Row(**{k: v for k, v in row.items() if k in names}) for row in section["rows"]]


def main(argv=None) -> None:
    args = parse_args(argv)
    from laser_fairseq.bench_results import Recorder

    recorder = Recorder("soft_dtw", args, None if argv is None else ["scripts/benchmark.py", *argv])
    if args.omp_wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
    import numba
    import torch

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    header = (f"torch {torch.__version__} ({torch.get_num_threads()} threads), numba {numba.__version__} "
              f"({numba.get_num_threads()} threads, layer {numba.config.THREADING_LAYER}), "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(header)
    sections = {}
    for name in args.sections:
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; choose from {sorted(SECTIONS)}")
        title, rows = SECTIONS[name](args)
        print_table(title, rows)
        sections[name] = section_result(title, rows)
    recorder.write(args.out, {"header": header, "sections": sections})


if __name__ == "__main__":
    main()
