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
  python benchmarks/soft_dtw.py --threads 2 --repeats 7
  python benchmarks/soft_dtw.py --skip-slow --sections variable --out outputs/bench
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

from laser_fairseq.bench_soft_dtw import (
    Inputs,
    authors_recipe,
    errors,
    float64_reference,
    make_inputs,
    ours,
    per_pair,
    pysdtw_divergence,
    run_once,
)


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
class Row:
    name: str
    median_ms: Optional[float]
    values_err: Optional[float] = None
    values_rel: Optional[float] = None
    grad_err: Optional[float] = None
    grad_rel: Optional[float] = None
    note: str = ""
    times_ms: list = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Implementations: each factory returns fn(x, y, x_lengths, y_lengths, gamma) -> (B,) or a reason
# ----------------------------------------------------------------------------------------------


def pysdtw_cpu():
    return pysdtw_divergence(use_cuda=False)


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

    recorder = Recorder("soft_dtw", args, None if argv is None else ["benchmarks/soft_dtw.py", *argv])
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
