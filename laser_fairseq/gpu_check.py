"""One command that proves a GPU machine for LASER: the Triton soft-DTW kernel, its speed, and training.

    laser-gpu-check            # or python scripts/gpu_check.py; a table, exit status 1 if a check fails

With a CUDA GPU (written for one H100 / H200; a few minutes):
  kernel     float32 Triton kernel vs a float64 reference on the CPU (numba's float64 kernel, else the torch
             backend): values within 1e-6 and gradients within 1e-5 (relative to the largest), gradient exactly
             0 at padded frames; at the reference size (B=8, 500 x 450, d=256, gamma 0.1), variable lengths
             200-800 (gamma 0.1), 800-frame pairs (gamma 0.01) and 2,000-frame pairs (gamma 0.1)
  selfcheck  the first-use self-check passes and costs <= 50 ms once the kernels are compiled
  speed      divergence forward + backward (cost matrices included) at the reference size and for 20 s
             utterances (B=8, 1000 x 909 frames): Triton vs the torch backend vs pysdtw's CUDA kernel (median ms,
             ratio), and the GPU memory the loss needs (peak above what was allocated before)
  train      20-update LASER runs (fairseq-hydra-train, demo corpus, tiny HuBERT) in fp32, fp16, bf16 and amp:
             loss finite and falling, frozen tensors unchanged (equal to the original rounded to the run's
             precision in the checkpoint), export to the original format verified and reloaded with frozen
             tensors bit-identical to the original
Without a GPU it says so and runs what can run: the same kernel checks under Triton's CPU interpreter
(TRITON_INTERPRET=1, set by ``run_gpu_check``; several minutes at full size, --quick for smaller sizes), the
compilation of both kernels for an H100 (sm_90) with Triton's bundled toolchain, and the training runs
fairseq supports on CPU (fp32, bf16; fp16 and amp need CUDA). It exits 0 when those pass.

The front door is laser_fairseq/cli/gpu_check.py; docs/gpu.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from .demo import PRECISIONS, REPO, check_laser_run
from .files import write_json

VALUE_LIMIT, GRAD_LIMIT = 1e-6, 1e-5  # relative to the largest value / gradient of the reference
SELF_CHECK_BUDGET_MS = 50.0


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


@dataclass
class Result:
    section: str
    name: str
    status: str  # PASS, FAIL, SKIP, INFO
    detail: str


class Report:
    """Rows printed as they come, then as one table."""

    def __init__(self):
        self.rows: list[Result] = []

    def add(self, section: str, name: str, status: str, detail: str) -> None:
        row = Result(section, name, status, detail)
        self.rows.append(row)
        print(f"[{row.status}] {row.section} / {row.name}: {row.detail}", flush=True)

    def check(self, section: str, name: str, ok: bool, detail: str) -> None:
        self.add(section, name, "PASS" if ok else "FAIL", detail)

    def guarded(self, section: str, name: str, fn: Callable[[], None]) -> None:
        """Run ``fn``; an exception becomes a FAIL row with its message."""
        try:
            fn()
        except Exception as error:  # the table must still be printed
            traceback.print_exc()
            self.add(section, name, "FAIL", f"{type(error).__name__}: {error}")

    @property
    def failed(self) -> bool:
        return any(r.status == "FAIL" for r in self.rows)

    def print_table(self) -> None:
        print("\n| section | check | result | detail |\n|---|---|---|---|")
        for r in self.rows:
            print(f"| {r.section} | {r.name} | {r.status} | {r.detail} |")


# ----------------------------------------------------------------------------------------------
# Kernel accuracy
# ----------------------------------------------------------------------------------------------


def kernel_cases(quick: bool) -> list[tuple[str, int, list[int], list[int], float]]:
    """(name, d, x lengths, y lengths, gamma) of the accuracy checks."""
    import torch

    scale = 4 if quick else 1
    batch = 2 if quick else 8
    g = torch.Generator().manual_seed(13)
    lo, hi = 200 // scale, 800 // scale
    variable = (torch.randint(lo, hi + 1, (batch,), generator=g).tolist(),
                torch.randint(lo, hi + 1, (batch,), generator=g).tolist())
    return [
        (f"reference size B={batch} {500 // scale}x{450 // scale}", 256, [500 // scale] * batch,
         [450 // scale] * batch, 0.1),
        (f"variable lengths {lo}-{hi}, B={batch}", 256, *variable, 0.1),
        (f"{800 // scale}-frame pairs, gamma 0.01", 256, [800 // scale, 800 // scale], [780 // scale, 800 // scale],
         0.01),
        (f"{2000 // scale}-frame pairs", 256, [2000 // scale], [1900 // scale], 0.1),
    ]


def check_kernel(report: Report, device, quick: bool) -> None:
    """float32 Triton kernel against float64 on the CPU, values / gradients / padding, for each case."""
    import torch

    from .bench_soft_dtw import errors, float64_reference, make_inputs, run_once
    from .losses import soft_dtw_divergence
    from laser_fairseq.losses.soft_dtw import _numba_available

    where = "GPU" if device.type == "cuda" else "interpreter"
    reference = "numba" if _numba_available() else "torch"
    for name, dim, x_lengths, y_lengths, gamma in kernel_cases(quick):
        def run(name=name, dim=dim, x_lengths=x_lengths, y_lengths=y_lengths, gamma=gamma):
            inp = make_inputs(len(x_lengths), x_lengths, y_lengths, dim, gamma, seed=0)
            want = float64_reference(inp, reference)
            start = time.perf_counter()
            got = run_once(lambda x, y, xl, yl, g: soft_dtw_divergence(x, y, xl, yl, gamma=g, backend="triton"),
                           on_device(inp, device))
            seconds = time.perf_counter() - start
            _, value_rel, _, grad_rel = errors(got, want)
            padding_zero = all(bool((grad.cpu()[b, n:] == 0).all()) for grad, lengths in
                               ((got[1], inp.x_lengths), (got[2], inp.y_lengths)) for b, n in enumerate(lengths.tolist()))
            ok = value_rel <= VALUE_LIMIT and grad_rel <= GRAD_LIMIT and padding_zero
            report.check("kernel", f"{name} ({where})", ok,
                         f"values rel {value_rel:.1e} (<= {VALUE_LIMIT:.0e}), gradients rel {grad_rel:.1e} "
                         f"(<= {GRAD_LIMIT:.0e}), padding gradient {'exactly 0' if padding_zero else 'NOT 0'}; "
                         f"vs {reference} float64; {seconds:.1f} s")

        report.guarded("kernel", name, run)


def on_device(inp, device):
    """The benchmark inputs with x and y on ``device`` (lengths stay on the CPU, as pysdtw wants them)."""
    from .bench_soft_dtw import Inputs

    return Inputs(inp.x.to(device), inp.y.to(device), inp.x_lengths, inp.y_lengths, inp.gamma)


def check_compiles_for_h100(report: Report) -> None:
    """Both kernels, as a GPU run compiles them, through Triton's bundled LLVM + ptxas for sm_90, in a process
    without the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = textwrap.dedent("""
        from .losses import soft_dtw_triton as k
        print(k.compile_for(90))
    """)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    detail = proc.stdout.strip().replace("\n", "; ") if proc.returncode == 0 else proc.stderr.strip()[-500:]
    report.check("kernel", "compiles for sm_90 (H100) without a GPU", proc.returncode == 0,
                 f"cubin bytes {detail}; {time.perf_counter() - start:.0f} s")


# ----------------------------------------------------------------------------------------------
# Self-check cost, speed and memory (GPU)
# ----------------------------------------------------------------------------------------------


def check_self_check(report: Report, device) -> None:
    import torch

    import importlib

    dispatch = importlib.import_module("laser_fairseq.losses.soft_dtw")
    from laser_fairseq.losses.soft_dtw_triton import TritonDP

    impl = dispatch._CostLevel(TritonDP)
    start = time.perf_counter()
    dispatch.self_check_errors(impl, device, torch.float32)  # compiles the kernels for this problem's shapes
    first = (time.perf_counter() - start) * 1e3
    times, errors = [], None
    for _ in range(5):
        torch.cuda.synchronize()
        start = time.perf_counter()
        errors = dispatch.self_check_errors(impl, device, torch.float32)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    ms = statistics.median(times)
    limit = dispatch.SELF_CHECK_LIMITS[torch.float32]
    report.check("selfcheck", "first-use self-check", ms <= SELF_CHECK_BUDGET_MS and max(errors) <= limit,
                 f"{ms:.1f} ms once compiled (budget {SELF_CHECK_BUDGET_MS:.0f} ms; first call incl. compilation "
                 f"{first:.0f} ms), errors values {errors[0]:.1e} / gradients {errors[1]:.1e} (limit {limit:.0e})")


def speed_cases(quick: bool) -> list[tuple[str, int, int, int]]:
    scale = 4 if quick else 1
    return [(f"reference B=8 {500 // scale}x{450 // scale} d=256", 8, 500 // scale, 450 // scale),
            (f"20 s utterances B=8 {1000 // scale}x{909 // scale} d=256", 8, 1000 // scale, 909 // scale)]


def timed(fn, inp, repeats: int) -> tuple[float, float]:
    """(median ms, peak MB of GPU memory above the allocation before) of forward + backward."""
    import torch

    from .bench_soft_dtw import run_once

    run_once(fn, inp)  # warm-up: compilation, caches
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run_once(fn, inp)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run_once(fn, inp)
    torch.cuda.synchronize()
    return statistics.median(times), (torch.cuda.max_memory_allocated() - before) / 2 ** 20


def check_speed(report: Report, device, quick: bool, repeats: int) -> None:
    from .bench_soft_dtw import make_inputs, ours, pysdtw_divergence

    implementations = [("triton", ours("triton")(), repeats), ("torch backend", ours("torch")(), max(1, repeats // 10)),
                       ("pysdtw CUDA", pysdtw_divergence(use_cuda=True), repeats)]
    for name, batch, n, m in speed_cases(quick):
        inp = on_device(make_inputs(batch, [n] * batch, [m] * batch, 256, 0.1, seed=0), device)
        results = {}
        for impl, fn, count in implementations:
            if isinstance(fn, str):
                report.add("speed", f"{name}: {impl}", "SKIP", fn)
                continue
            try:
                results[impl] = timed(fn, inp, count)
            except Exception as error:  # pysdtw's numba.cuda kernel may not compile on a driver-only machine
                if impl != "pysdtw CUDA":
                    raise
                report.add("speed", f"{name}: {impl}", "SKIP", f"does not run here: {type(error).__name__}: "
                                                               f"{str(error)[:200]}")
        ours_ms = results["triton"][0]
        for impl, (ms, mb) in results.items():
            ratio = "" if impl == "triton" else f", {ms / ours_ms:.1f}x triton's time"
            report.add("speed", f"{name}: {impl}", "INFO", f"median {ms:.2f} ms{ratio}; loss memory {mb:.0f} MB")


# ----------------------------------------------------------------------------------------------
# LASER training runs
# ----------------------------------------------------------------------------------------------


def check_training(report: Report, device, updates: int, work_dir: str) -> None:
    from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint

    upstream = os.path.join(work_dir, "tiny_hubert.pt")
    save_checkpoint(make_tiny_hubert(layers=4, dim=64, seed=0), upstream)
    for precision in PRECISIONS:
        label = f"{precision} on {'GPU' if device.type == 'cuda' else 'CPU'}"
        if device.type != "cuda" and precision in ("fp16", "amp"):
            report.add("train", label, "SKIP", "fairseq's fp16 / amp optimizers need CUDA")
            continue

        def run(precision=precision, label=label):
            start = time.perf_counter()
            results = check_laser_run(upstream, os.path.join(work_dir, precision), precision, device.type, updates)
            for check, ok, detail in results:
                report.check("train", f"{label}: {check}", bool(ok), detail)
            report.add("train", f"{label}: time", "INFO", f"{time.perf_counter() - start:.0f} s incl. start-up")

        report.guarded("train", label, run)


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------


def environment(report: Report, device) -> None:
    import torch
    import triton

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = (f"{props.name} (sm_{props.major}{props.minor}, {props.total_memory / 2 ** 30:.0f} GiB), "
                 f"CUDA {torch.version.cuda}")
    else:
        where = "no CUDA GPU: kernel checks under Triton's CPU interpreter, no speed numbers, CPU training runs"
    report.add("env", "machine", "INFO", f"{where}; torch {torch.__version__}, triton {triton.__version__}; "
                                         f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def run_gpu_check(quick: bool = False, skip_kernel: bool = False, skip_speed: bool = False,
                  skip_training: bool = False, updates: Optional[int] = None, repeats: int = 20,
                  work_dir: Optional[str] = None, json_path: Optional[str] = None) -> int:
    """All checks of the module doc; prints the table, writes it to ``json_path`` if given; 1 if any failed."""
    import torch

    gpu = torch.cuda.is_available()
    if not gpu:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the kernel module is imported
    for noisy in ("numba", "fairseq", "laser_fairseq"):  # fairseq's import sets the root logger to DEBUG
        logging.getLogger(noisy).setLevel(logging.WARNING)
    device = torch.device("cuda" if gpu else "cpu")
    report = Report()
    environment(report, device)
    if not skip_kernel:
        check_kernel(report, device, quick)
        if not gpu:
            report.guarded("kernel", "compiles for sm_90", lambda: check_compiles_for_h100(report))
    if gpu:
        report.guarded("selfcheck", "first-use self-check", lambda: check_self_check(report, device))
        if not skip_speed:
            report.guarded("speed", "speed", lambda: check_speed(report, device, quick, repeats))
    else:
        report.add("selfcheck", "cost", "SKIP", "measured on a GPU only (the interpreter's time says nothing)")
        report.add("speed", "speed and memory", "SKIP", "no GPU")
    if not skip_training:
        runs_dir = work_dir or tempfile.mkdtemp(prefix="gpu_check_")
        os.makedirs(runs_dir, exist_ok=True)
        try:
            check_training(report, device, updates or (10 if quick else 20), runs_dir)
        finally:
            if not work_dir:
                shutil.rmtree(runs_dir, ignore_errors=True)
    report.print_table()
    if json_path:
        write_json(json_path, [asdict(r) for r in report.rows])
    if report.failed:
        print("\nFAILED: see the rows marked FAIL above", file=sys.stderr)
        return 1
    print("\nall checks passed" + ("" if gpu else " (CPU-only machine: what can run without a GPU)"))
    return 0

