#!/usr/bin/env python
"""Training-step benchmark at HuBERT-Base geometry: our batched LASER step vs the authors' per-pair style.

First, the data side: perturbing one utterance (speed + pitch) with the task's fast rational pitch shift
vs torchaudio's stock PitchShift (skip with --skip-perturbation).

A random HuBERT with Base geometry (12 blocks, 768 dims, 512-channel CNN; written in fairseq's format and
loaded through the `laser` model like hubert_base_ls960.pt) fine-tunes its top 2 blocks on --pairs pairs of
--seconds s (an utterance and its speed + pitch perturbed copy, drawn with the task's perturber).

  ours      one step: the `laser` model's forward on the batch (both views of all pairs in one upstream
            batch, frozen trunk without autograd, each utterance through the CNN alone), the soft-DTW
            divergence (numba kernel, all pairs in one call) + Contrastive-IDM, one backward
  authors   the authors' style: one pair at a time (batch of 1 per view), the same frozen layers, their
            loss recipe (float64 numba soft-DTW with the cost built by broadcasting, CPU round trip,
            re-implemented in laser_fairseq/bench_soft_dtw.py) + the same IDM, one backward per pair

Time: one process runs both styles on the same model and inputs, --warmup untimed steps each, then
--repeats rounds alternating the two (ours, authors, then authors, ours, ...), so a change of machine
load hits both alike; medians per phase. Time is split into frozen trunk, trainable blocks (forward +
backward) and loss (forward + backward); the phase boundaries are hooks on the model's first trainable
block and on its head, so "ours" is the model's own forward.

Memory: each style in a fresh process, one untimed step, then
  peak MB     the highest resident set during one step above the resident set before it (Linux /proc:
              VmHWM after resetting it, minus VmRSS). These processes run with glibc's mmap threshold
              fixed (MALLOC_MMAP_THRESHOLD_=131072): by default glibc raises the threshold whenever a large
              block is freed and then keeps freed memory in its heap, so the resident set would depend on
              the allocation history of the process more than on the step (+-50 MB between runs here);
  tensors MB  the peak of torch tensor storage alive during one step (counted at the operator level, so
              independent of the allocator; numpy work arrays of the soft-DTW kernels are not included).

Results: ``--out DIR`` also writes DIR/training_step.json (the medians of every phase and every step, the
memory figures, the perturbation timings, the command, date, machine, load average before/after and
versions; laser_fairseq/bench_results.py). ``make bench`` writes the committed
benchmarks/results/training_step.json, from which docs/training.md and README.md quote.

  python benchmarks/training_step.py [--pairs 4] [--seconds 4] [--repeats 3] [--threads 2] [--out DIR]
"""

import argparse
import contextlib
import gc
import logging
import multiprocessing
import os
import statistics
import tempfile
import time
import warnings
import weakref

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: its OpenMP threads would spin on 2 cores

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_flatten  # noqa: E402

from laser_fairseq.data.audio import SAMPLE_RATE  # noqa: E402

ALPHA, SIGMA, MARGIN, GAMMA = 0.4, 0.0, 1.1, 0.1


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4, help="utterance pairs per step (default 4)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each original utterance (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per style (median; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-perturbation", action="store_true", help="skip the perturbation-cost table")
    parser.add_argument("--out", help="write the results to OUT/training_step.json (make bench: benchmarks/results)")
    return parser.parse_args(argv)


def write_checkpoint(folder: str) -> str:
    """A random HuBERT with Base geometry in fairseq's format (written once per folder)."""
    from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint

    path = os.path.join(folder, "hubert_base_geometry.pt")
    if not os.path.exists(path):
        state = make_tiny_hubert(layers=12, dim=768, ffn=3072, heads=12, conv_channels=512,
                                 conv_pos=128, conv_pos_groups=16)
        save_checkpoint(state, path)
    return path


def build_model(folder: str):
    """The `laser` model on the checkpoint of ``write_checkpoint``, in training mode."""
    from laser_fairseq.models.laser_model import LaserModel, LaserModelConfig

    config = LaserModelConfig(upstream_path=write_checkpoint(folder), trainable_layers=2)
    return LaserModel.build_model(config).train()


def make_pairs(count: int, seconds: float, seed: int):
    """[(original (S,), perturbed (S',))] from the task's perturber (speed 0.9/1.0/1.1, +-2 semitones)."""
    import numpy as np

    from laser_fairseq.data.perturbation import Perturbation, SpeedPitchPerturber

    perturber = SpeedPitchPerturber(SAMPLE_RATE, (0.9, 1.0, 1.1), (-2.0, 2.0))
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        original = 0.1 * torch.randn(int(seconds * SAMPLE_RATE), generator=generator)
        drawn = perturber.draw(rng)
        pairs.append((original, perturber.apply(original, Perturbation(drawn.speed, drawn.semitones, False))))
    return pairs


def pad(waves):
    longest = max(len(w) for w in waves)
    batch = torch.zeros(len(waves), longest)
    mask = torch.ones(len(waves), longest, dtype=torch.bool)
    for row, wave in enumerate(waves):
        batch[row, : len(wave)] = wave
        mask[row, : len(wave)] = False
    return batch, mask


class Clock:
    """Accumulates wall time per phase."""

    def __init__(self):
        self.totals = {}
        self.start = time.perf_counter()

    def lap(self, phase: str):
        now = time.perf_counter()
        self.totals[phase] = self.totals.get(phase, 0.0) + now - self.start
        self.start = now


@contextlib.contextmanager
def phase_laps(model, clock):
    """Lap ``clock`` when the model enters its first trainable block ("trunk" done) and leaves its head
    ("blocks" forward done)."""
    first_trainable = model.upstream.layers[model.first_trainable]
    hooks = [
        first_trainable.register_forward_pre_hook(lambda *_: clock.lap("trunk")),
        model.head.register_forward_hook(lambda *_: clock.lap("blocks")),
    ]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def loss_and_backward(z_parts, loss_fn, clock):
    """Loss forward + backward to z (timed 'loss'), then backward through the top blocks ('blocks')."""
    leaves = [z.detach().requires_grad_(True) for z in z_parts]
    loss = loss_fn(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    clock.lap("loss")
    torch.autograd.backward(z_parts, grads)
    clock.lap("blocks")
    return float(loss.detach())


def laser_loss(divergence_fn):
    from laser_fairseq.losses import contrastive_idm

    def loss(z_a, z_b, lengths_a, lengths_b):
        divergence = divergence_fn(z_a, z_b, lengths_a, lengths_b)
        idm = contrastive_idm(z_a, lengths_a, SIGMA, MARGIN) + contrastive_idm(z_b, lengths_b, SIGMA, MARGIN)
        return (divergence + ALPHA * idm).sum()

    return loss


def our_step(model, pairs, clock):
    """The model's forward on the padded batch of pairs, one loss call, one backward."""
    from laser_fairseq.losses import soft_dtw_divergence

    divergence = laser_loss(lambda a, b, la, lb: soft_dtw_divergence(a, b, la, lb, gamma=GAMMA, backend="numba"))
    source_a, mask_a = pad([p[0] for p in pairs])
    source_b, mask_b = pad([p[1] for p in pairs])
    with phase_laps(model, clock):
        out = model(source_a, source_b, mask_a, mask_b)
    loss_and_backward(
        [out["z_a"], out["z_b"]], lambda a, b: divergence(a, b, out["lengths_a"], out["lengths_b"]), clock
    )


def authors_step(model, pairs, clock):
    """One pair at a time: each view a batch of one, the authors' per-pair soft-DTW recipe."""
    from laser_fairseq.bench_soft_dtw import authors_recipe

    pair_divergence = authors_recipe()
    divergence = laser_loss(lambda a, b, la, lb: pair_divergence(a, b, la, lb, GAMMA))
    one = torch.ones(1, dtype=torch.long)
    for original, perturbed in pairs:
        with phase_laps(model, clock):
            z_a = model.project(model.encode(original[None])[0])
            z_b = model.project(model.encode(perturbed[None])[0])
        lengths_a, lengths_b = one * z_a.shape[1], one * z_b.shape[1]
        loss_and_backward([z_a, z_b], lambda a, b: divergence(a, b, lengths_a, lengths_b), clock)


STEPS = {"ours": our_step, "authors": authors_step}


def setup_process(args):
    """Threads, denormals and a quiet console (the table is the only output) in a benchmark process."""
    import numba

    warnings.simplefilter("ignore")  # deprecation notices of fairseq's weight norm, numpy's denormal notes
    logging.disable(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # gamma = 0.1 gradients otherwise hit slow denormal matmuls
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))


def one_step(model, step, pairs) -> dict:
    model.zero_grad(set_to_none=True)
    clock = Clock()
    step(model, pairs, clock)
    return clock.totals


def time_styles(args, folder: str, queue):
    """Both styles in this process, alternating; medians of each phase per style."""
    setup_process(args)
    model = build_model(folder)
    pairs = make_pairs(args.pairs, args.seconds, args.seed)
    for style in STEPS:
        for _ in range(args.warmup):
            one_step(model, STEPS[style], pairs)
    samples = {style: [] for style in STEPS}
    for repeat in range(args.repeats):
        for style in (list(STEPS) if repeat % 2 == 0 else list(STEPS)[::-1]):
            samples[style].append(one_step(model, STEPS[style], pairs))
    medians = {}
    for style, runs in samples.items():
        medians[style] = {phase: statistics.median(run[phase] for run in runs) for phase in runs[0]}
        medians[style]["total"] = statistics.median(sum(run.values()) for run in runs)
        medians[style]["steps"] = [dict(run, total=sum(run.values())) for run in runs]
    queue.put(medians)


def measure_memory(style: str, args, folder: str, queue):
    """In a fresh process: (peak resident MB above the start of a step, peak tensor MB) of one step."""
    setup_process(args)
    model = build_model(folder)
    pairs = make_pairs(args.pairs, args.seconds, args.seed)
    one_step(model, STEPS[style], pairs)  # warm-up: numba compilation, first-touch allocations
    model.zero_grad(set_to_none=True)
    gc.collect()
    baseline_mb = reset_peak_memory()
    one_step(model, STEPS[style], pairs)
    resident_mb = memory_mb("VmHWM") - baseline_mb
    model.zero_grad(set_to_none=True)
    gc.collect()
    with TensorMemory(model, pairs) as tensors:
        one_step(model, STEPS[style], pairs)
    queue.put((resident_mb, tensors.peak / 2**20))


class TensorMemory(TorchDispatchMode):
    """Peak bytes of torch storages created while active and still alive (parameters and inputs excluded)."""

    def __init__(self, model, pairs):
        super().__init__()
        existing = list(model.parameters()) + list(model.buffers()) + [w for pair in pairs for w in pair]
        self.counted = {id(t.untyped_storage()) for t in existing}
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._count(tensor.untyped_storage())
        return out

    def _count(self, storage):
        key, size = id(storage), storage.nbytes()
        if key in self.counted or size == 0:
            return
        self.counted.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key, size)

    def _release(self, key, size):
        self.counted.discard(key)
        self.live -= size


def memory_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS: now, VmHWM: peak), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_memory() -> float:
    """Reset the peak resident set (Linux clear_refs 5) and return the current resident set, in MB."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return memory_mb("VmRSS")


def run_in_process(target, *args):
    """``target(*args, queue)`` in a fresh interpreter; what it put on the queue."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()  # before join: a large result would otherwise block the child's exit
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"the benchmark process {target.__name__} failed (exit code {process.exitcode})")
    return result


@contextlib.contextmanager
def fixed_mmap_threshold(threshold: int = 128 * 1024):
    """Processes started inside get glibc's mmap threshold fixed, so freed tensors go back to the OS."""
    before = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(threshold)
    try:
        yield
    finally:
        if before is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = before


def format_table(times: dict, memory: dict, pairs: int) -> str:
    """The step table (as docs/training.md quotes it) from the medians and the memory figures."""
    lines = [f"LASER training step, HuBERT-Base geometry, {pairs} pairs (median s per step; memory: peak of one "
             f"step above its start)"]
    header = (f"{'style':<10}{'total s':>9}{'trunk s':>9}{'blocks s':>10}{'loss s':>9}{'loss %':>8}{'pairs/s':>9}"
              f"{'peak MB':>9}{'tensors MB':>12}")
    lines += [header, "-" * len(header)]
    for style in STEPS:
        phases, total = times[style], times[style]["total"]
        resident_mb, tensor_mb = memory[style]
        lines.append(
            f"{style:<10}{total:>9.2f}{phases['trunk']:>9.2f}{phases['blocks']:>10.2f}{phases['loss']:>9.3f}"
            f"{100 * phases['loss'] / total:>7.1f}%{pairs / total:>9.2f}{resident_mb:>9.0f}{tensor_mb:>12.0f}"
        )
    lines.append(f"speed-up of ours: {times['authors']['total'] / times['ours']['total']:.2f}x; memory ours/authors: "
                 f"peak {memory['ours'][0] / memory['authors'][0]:.2f}, tensors {memory['ours'][1] / memory['authors'][1]:.2f}")
    return "\n".join(lines)


def print_table(times: dict, memory: dict, pairs: int):
    print("\n" + format_table(times, memory, pairs))


def step_results(times: dict, memory: dict, pairs: int) -> dict:
    """What training_step.json stores of the step: per style the median phases, loss share, pairs/s, memory
    and every timed step; the speed-up and the memory ratios; the table as printed."""
    styles = {}
    for style in STEPS:
        phases = times[style]
        styles[style] = {
            "median_s": {phase: phases[phase] for phase in ("total", "trunk", "blocks", "loss")},
            "loss_percent": 100 * phases["loss"] / phases["total"],
            "pairs_per_s": pairs / phases["total"],
            "peak_mb": memory[style][0],
            "tensors_mb": memory[style][1],
            "steps_s": phases.get("steps", []),
        }
    return {
        "styles": styles,
        "speedup": times["authors"]["total"] / times["ours"]["total"],
        "peak_ratio": memory["ours"][0] / memory["authors"][0],
        "tensors_ratio": memory["ours"][1] / memory["authors"][1],
        "table": format_table(times, memory, pairs),
    }


def stored_table(step: dict, pairs: int) -> str:
    """``format_table`` from what ``step_results`` stored."""
    times = {style: dict(entry["median_s"]) for style, entry in step["styles"].items()}
    memory = {style: (entry["peak_mb"], entry["tensors_mb"]) for style, entry in step["styles"].items()}
    return format_table(times, memory, pairs)


def bench_perturbation(seconds: float, repeats: int):
    """One utterance: our speed + pitch perturbation vs speed + torchaudio's stock PitchShift, one thread."""
    import torchaudio

    from laser_fairseq.data.perturbation import Perturbation, SpeedPitchPerturber, pitch_ratio, semitones_of

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    wave = 0.1 * torch.randn(int(seconds * SAMPLE_RATE), generator=torch.Generator().manual_seed(0))
    perturber = SpeedPitchPerturber(SAMPLE_RATE, (1.1,), (2.0,))
    stock_pitch = torchaudio.transforms.PitchShift(SAMPLE_RATE, 2)

    def ours():
        perturber.apply(wave, Perturbation(1.1, 2.0, False))

    def stock():
        with torch.no_grad():
            stock_pitch(torchaudio.functional.speed(wave, SAMPLE_RATE, 1.1)[0])

    rows = []
    for name, fn, shift in (("ours (rational 9/8)", ours, semitones_of(pitch_ratio(2.0))),
                            ("torchaudio PitchShift", stock, 2.0)):
        gc.collect()
        resident_before = memory_mb("VmRSS")
        start = time.perf_counter()
        fn()  # warm-up (the stock transform builds its resampling kernel on the first call)
        first_ms = 1000 * (time.perf_counter() - start)
        first_mb = memory_mb("VmRSS") - resident_before  # what the first call left resident (its kernel)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rows.append((name, 1000 * statistics.median(times), shift, [1000 * t for t in times], first_ms, first_mb))
    print(f"\nPerturbation of one {seconds:g} s utterance (speed 1.1, then +2 semitones), 1 thread, median of {repeats}")
    print(f"{'implementation':<24}{'ms':>10}{'semitones':>11}{'ratio':>8}")
    for name, ms, shift, *_ in rows:
        print(f"{name:<24}{ms:>10.1f}{shift:>11.3f}{ms / rows[0][1]:>7.1f}x")
    print("first call: " + ", ".join(f"{name} {first_ms / 1000:.1f} s, +{first_mb:.0f} MB resident"
                                     for name, _, _, _, first_ms, first_mb in rows))
    torch.set_num_threads(threads)
    return {"seconds": seconds, "repeats": repeats,
            "rows": [{"name": name, "median_ms": ms, "semitones": shift, "ratio": ms / rows[0][1], "times_ms": t,
                      "first_call_ms": first_ms, "first_call_resident_mb": first_mb}
                     for name, ms, shift, t, first_ms, first_mb in rows]}


def main(argv=None):
    args = parse_args(argv)
    from laser_fairseq.bench_results import Recorder

    recorder = Recorder("training_step", args, None if argv is None else ["benchmarks/training_step.py", *argv])
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    results = {}
    if not args.skip_perturbation:
        results["perturbation"] = bench_perturbation(args.seconds, max(args.repeats, 3))
    with tempfile.TemporaryDirectory() as folder:
        write_checkpoint(folder)  # once, outside the measuring processes
        times = run_in_process(time_styles, args, folder)
        with fixed_mmap_threshold():
            memory = {style: run_in_process(measure_memory, style, args, folder) for style in STEPS}
    print_table(times, memory, args.pairs)
    results["step"] = step_results(times, memory, args.pairs)
    recorder.write(args.out, results)


if __name__ == "__main__":
    main()
