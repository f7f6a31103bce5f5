#!/usr/bin/env python
"""Training-step benchmark at HuBERT-Base geometry: our batched LASER step vs the authors' per-pair style.

First, the data side: perturbing one utterance (speed + pitch) with the task's fast rational pitch shift
vs torchaudio's stock PitchShift (skip with --skip-perturbation).

A random HuBERT with Base geometry (12 blocks, 768 dims, 512-channel CNN; written in fairseq's format and
loaded through the `laser` model like hubert_base_ls960.pt) fine-tunes its top 2 blocks on --pairs pairs of
--seconds s (an utterance and its speed + pitch perturbed copy, drawn with the task's perturber).

  ours      one step: both views of all pairs in one upstream batch (frozen trunk without autograd, each
            utterance through the CNN alone), the soft-DTW divergence (numba kernel, all pairs in one call)
            + Contrastive-IDM, one backward
  authors   the authors' style: one pair at a time (batch of 1 per view), the same frozen layers, their
            loss recipe (float64 numba soft-DTW with the cost built by broadcasting, CPU round trip,
            re-implemented in scripts/benchmark.py) + the same IDM, one backward per pair

Each style runs in its own process with the same model and inputs: --warmup untimed steps, then the
median of --repeats. Peak memory: the highest resident set during the steps above the resident set with
the model loaded (Linux /proc: VmHWM after resetting it, minus VmRSS before the steps). Time is split into frozen trunk, trainable
blocks (forward + backward) and loss (forward + backward).

  python scripts/benchmark_step.py [--pairs 4] [--seconds 4] [--repeats 3] [--threads 2]
"""

import argparse
import gc
import multiprocessing
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

ALPHA, SIGMA, MARGIN, GAMMA = 0.4, 0.0, 1.1, 0.1
SAMPLE_RATE = 16_000


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=4, help="utterance pairs per step (default 4)")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each original utterance (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per style (median; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch and numba threads (default 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-perturbation", action="store_true", help="skip the perturbation-cost table")
    return parser.parse_args(argv)


def build_model(folder: str):
    """The `laser` model on a random HuBERT-Base-geometry checkpoint in fairseq's format."""
    from laser_fairseq.models.laser_model import LaserModel, LaserModelConfig
    from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint

    path = os.path.join(folder, "hubert_base_geometry.pt")
    if not os.path.exists(path):
        state = make_tiny_hubert(layers=12, dim=768, ffn=3072, heads=12, conv_channels=512,
                                 conv_pos=128, conv_pos_groups=16)
        save_checkpoint(state, path)
    return LaserModel.build_model(LaserModelConfig(upstream_path=path, trainable_layers=2)).train()


def make_pairs(count: int, seconds: float, seed: int):
    """[(original (S,), perturbed (S',))] from the task's perturber (speed 0.9/1.0/1.1, +-2 semitones)."""
    import numpy as np
    import torch

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
    import torch

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


def trunk_then_top(model, source, padding_mask, clock):
    """(z (B, T, P), lengths) through the frozen trunk (timed as 'trunk') and the top blocks + head."""
    import torch

    from laser_fairseq.models.blockwise import frame_lengths

    with torch.no_grad():
        state = model.upstream.embed(source, padding_mask)
        state = model.upstream.run_blocks(state, 0, model.first_trainable)
    clock.lap("trunk")
    state = model.upstream.run_blocks(state.detached(), model.first_trainable, model.upstream.num_layers)
    z = model.project(model.upstream.finalize(state))
    lengths = frame_lengths(state.padding_mask, z.shape[0], z.shape[1], z.device)
    clock.lap("blocks")
    return z, lengths


def loss_and_backward(z_parts, loss_fn, clock):
    """Loss forward + backward to z (timed 'loss'), then backward through the top blocks ('blocks')."""
    import torch

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
    """All pairs in one batch: one upstream call for both views, one loss call, one backward."""
    from laser_fairseq.losses import soft_dtw_divergence

    divergence = laser_loss(lambda a, b, la, lb: soft_dtw_divergence(a, b, la, lb, gamma=GAMMA, backend="numba"))
    source, mask = pad([p[0] for p in pairs] + [p[1] for p in pairs])
    z, lengths = trunk_then_top(model, source, mask, clock)
    count = len(pairs)
    z_a, z_b = z[:count, : int(lengths[:count].max())], z[count:, : int(lengths[count:].max())]
    loss_and_backward(
        [z_a, z_b], lambda a, b: divergence(a, b, lengths[:count], lengths[count:]), clock
    )


def authors_step(model, pairs, clock):
    """One pair at a time: each view a batch of one, the authors' per-pair soft-DTW recipe."""
    from benchmark import authors_recipe

    pair_divergence = authors_recipe()
    divergence = laser_loss(lambda a, b, la, lb: pair_divergence(a, b, la, lb, GAMMA))
    for original, perturbed in pairs:
        z_a, lengths_a = trunk_then_top(model, original[None], None, clock)
        z_b, lengths_b = trunk_then_top(model, perturbed[None], None, clock)
        loss_and_backward([z_a, z_b], lambda a, b: divergence(a, b, lengths_a, lengths_b), clock)


def measure(style: str, args, folder: str, queue):
    """Run in a fresh process: build, warm up, time ``repeats`` steps; report medians and peak RSS."""
    import warnings

    import torch

    warnings.filterwarnings("ignore", message="The value of the smallest subnormal")  # numpy, after flush
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # gamma = 0.1 gradients otherwise hit slow denormal matmuls
    import numba

    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    model = build_model(folder)
    pairs = make_pairs(args.pairs, args.seconds, args.seed)
    step = our_step if style == "ours" else authors_step
    gc.collect()
    baseline_mb = reset_peak_memory()
    samples = []
    for repeat in range(args.warmup + args.repeats):
        model.zero_grad(set_to_none=True)
        clock = Clock()
        step(model, pairs, clock)
        if repeat >= args.warmup:
            samples.append(clock.totals)
    medians = {phase: statistics.median(s[phase] for s in samples) for phase in samples[0]}
    medians["total"] = statistics.median(sum(s.values()) for s in samples)
    queue.put((style, medians, memory_mb("VmHWM") - baseline_mb))


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


def run_style(style: str, args, folder: str):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=measure, args=(style, args, folder, queue))
    process.start()
    process.join()
    if process.exitcode != 0 or queue.empty():
        raise SystemExit(f"the {style} benchmark process failed (exit code {process.exitcode}); see its traceback above")
    return queue.get()


def print_table(results, pairs: int):
    print(f"\nLASER training step, HuBERT-Base geometry, {pairs} pairs (median s per step; peak memory of the steps above the loaded model)")
    header = f"{'style':<10}{'total s':>9}{'trunk s':>9}{'blocks s':>10}{'loss s':>9}{'loss %':>8}{'pairs/s':>9}{'peak MB':>9}"
    print(header)
    print("-" * len(header))
    for style, times, peak_mb in results:
        total = times["total"]
        print(
            f"{style:<10}{total:>9.2f}{times['trunk']:>9.2f}{times['blocks']:>10.2f}{times['loss']:>9.3f}"
            f"{100 * times['loss'] / total:>7.1f}%{pairs / total:>9.2f}{peak_mb:>9.0f}"
        )
    (_, ours, ours_mb), (_, authors, authors_mb) = results
    print(f"speed-up of ours: {authors['total'] / ours['total']:.2f}x; peak memory ours/authors: "
          f"{ours_mb / authors_mb:.2f}")


def bench_perturbation(seconds: float, repeats: int):
    """One utterance: our speed + pitch perturbation vs speed + torchaudio's stock PitchShift, one thread."""
    import torch
    import torchaudio

    from laser_fairseq.data.perturbation import Perturbation, SpeedPitchPerturber, pitch_ratio, semitones_of

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
        fn()  # warm-up (the stock transform builds its resampling kernel on the first call)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rows.append((name, 1000 * statistics.median(times), shift))
    print(f"\nPerturbation of one {seconds:g} s utterance (speed 1.1, then +2 semitones), 1 thread, median of {repeats}")
    print(f"{'implementation':<24}{'ms':>10}{'semitones':>11}{'ratio':>8}")
    for name, ms, shift in rows:
        print(f"{name:<24}{ms:>10.1f}{shift:>11.3f}{ms / rows[0][1]:>7.1f}x")


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not args.skip_perturbation:
        bench_perturbation(args.seconds, max(args.repeats, 3))
    with tempfile.TemporaryDirectory() as folder:
        build_model(folder)  # write the checkpoint once, outside the timed processes
        results = [run_style(style, args, folder) for style in ("ours", "authors")]
    print_table(results, args.pairs)


if __name__ == "__main__":
    main()
