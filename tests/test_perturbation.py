"""Speed + pitch perturbation: the amounts applied, and the paired dataset's reproducible draws."""

import math
from fractions import Fraction
import os
import sys

import numpy as np
import pytest
import torch

from laser_fairseq.data.audio import SAMPLE_RATE, read_audio
from laser_fairseq.data.manifest import read_manifest
from laser_fairseq.data.paired_dataset import PairedPerturbedAudioDataset
from laser_fairseq.data.perturbation import (
    Perturbation,
    SpeedPitchPerturber,
    pitch_ratio,
    pitch_shift,
    semitones_of,
    speed_perturb,
    time_stretch,
)
from laser_fairseq.tasks.laser_task import LaserTask, LaserTaskConfig


DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "manifests", "demo")


def tone(frequency: float, seconds: float = 2.0) -> torch.Tensor:
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    return (0.5 * torch.sin(2 * math.pi * frequency * t)).float()


def peak_frequency(wave: torch.Tensor) -> float:
    """Frequency of the spectral peak, refined by parabolic interpolation of the log magnitude."""
    wave = wave[len(wave) // 8 : -len(wave) // 8].double()  # away from edge effects
    spectrum = torch.fft.rfft(wave * torch.hann_window(len(wave), dtype=torch.float64)).abs()
    k = int(spectrum.argmax())
    a, b, c = (math.log(spectrum[k + d].item()) for d in (-1, 0, 1))
    offset = 0.5 * (a - c) / (a - 2 * b + c)
    return (k + offset) * SAMPLE_RATE / len(wave)


@pytest.mark.parametrize("semitones", [-2.0, 2.0, 3.0, -1.0, 1.0])
def test_pitch_shift_moves_a_tone_by_the_requested_semitones(semitones):
    source = tone(300.0)
    shifted = pitch_shift(source, semitones)
    assert shifted.shape == source.shape
    measured = 12 * math.log2(peak_frequency(shifted) / peak_frequency(source))
    assert abs(measured - semitones) <= 0.05
    assert abs(measured - semitones_of(pitch_ratio(semitones))) <= 0.01


@pytest.mark.parametrize("semitones", [-14.0, -19.0])
def test_shifts_more_than_an_octave_down_keep_the_length_and_the_content(semitones):
    """Below a ratio of 1/2 the resampled stretch comes out short of the original and is padded at the end
    (and the smallest-terms search must skip the ratio 0)."""
    source = tone(600.0, seconds=2.5)[:32_005]  # 32005 = 1 (mod 9) and (mod 3): one sample short for 4/9, 1/3
    shifted = pitch_shift(source, semitones)
    assert shifted.shape == source.shape
    assert shifted[-1].item() == 0.0 and shifted[-2].item() != 0.0
    measured = 12 * math.log2(peak_frequency(shifted) / peak_frequency(source))
    assert abs(measured - semitones) <= 0.06


def test_pitch_ratios_have_small_terms_for_the_papers_shifts():
    assert pitch_ratio(2.0) == pitch_ratio(2.0, 0.05)
    assert (pitch_ratio(2.0).numerator, pitch_ratio(2.0).denominator) == (9, 8)
    assert (pitch_ratio(-2.0).numerator, pitch_ratio(-2.0).denominator) == (8, 9)


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.1, 1.2])
def test_speed_perturbation_changes_length_and_frequency_by_the_factor(factor):
    source = tone(300.0)
    sped = speed_perturb(source, SAMPLE_RATE, factor)
    assert abs(len(sped) - len(source) / factor) <= 2
    assert peak_frequency(sped) == pytest.approx(300.0 * factor, rel=2e-3)


def test_perturber_refuses_bad_settings():
    with pytest.raises(ValueError, match="speed_factors"):
        SpeedPitchPerturber(SAMPLE_RATE, (0.0,), (2.0,))
    with pytest.raises(ValueError, match="pitch_shifts"):
        SpeedPitchPerturber(SAMPLE_RATE, (1.0,), ())


def make_dataset(fixed: bool, seed: int = 3) -> PairedPerturbedAudioDataset:
    perturber = SpeedPitchPerturber(SAMPLE_RATE, (0.9, 1.0, 1.1), (-2.0, 2.0))
    return PairedPerturbedAudioDataset(
        read_manifest(os.path.join(DEMO, "train.tsv")), perturber, SAMPLE_RATE,
        max_sample_size=24_000, min_sample_size=8_000, seed=seed, fixed_perturbations=fixed,
    )


def test_items_are_reproducible_per_seed_epoch_and_index():
    first, again = make_dataset(False), make_dataset(False)
    for dataset, epoch in ((first, 2), (again, 2)):
        dataset.set_epoch(epoch)
    for index in (0, 5, 17):
        a, b = first[index], again[index]
        assert torch.equal(a["view_a"], b["view_a"]) and torch.equal(a["view_b"], b["view_b"])
        assert a["perturbation"] == b["perturbation"]
    draws_epoch_2 = [first[i]["perturbation"] for i in range(12)]
    first.set_epoch(3)
    draws_epoch_3 = [first[i]["perturbation"] for i in range(12)]
    assert draws_epoch_2 != draws_epoch_3  # a new epoch draws new perturbations


def test_validation_draws_ignore_the_epoch_and_every_item_is_its_audio_and_its_perturbed_copy():
    dataset = make_dataset(True)
    dataset.set_epoch(1)
    before = [dataset[i] for i in range(12)]
    dataset.set_epoch(7)
    assert [item["perturbation"] for item in before] == [dataset[i]["perturbation"] for i in range(12)]
    swaps = [item["perturbation"].swap for item in before]
    assert any(swaps) and not all(swaps)  # both view orders occur
    for index, item in enumerate(before):
        drawn = item["perturbation"]
        original, perturbed = (item["view_b"], item["view_a"]) if drawn.swap else (item["view_a"], item["view_b"])
        audio = read_audio(dataset.entries[index].path, SAMPLE_RATE)
        assert len(original) == min(24_000, len(audio))  # cropped before perturbing
        assert crop_start(audio, original) >= 0
        assert torch.equal(perturbed, dataset.perturber.apply(original, drawn))  # the same content, perturbed
        assert abs(len(perturbed) - len(original) / drawn.speed) <= 2


def crop_start(audio: torch.Tensor, crop: torch.Tensor) -> int:
    """Where ``crop`` starts in ``audio`` (the test fails when it is not a contiguous slice)."""
    for start in range(len(audio) - len(crop) + 1):
        if torch.equal(audio[start : start + len(crop)], crop):
            return start
    raise AssertionError("the view is not a slice of its audio file")


def test_collater_pads_both_views_with_masks():
    dataset = make_dataset(True)
    batch = dataset.collater([dataset[i] for i in range(4)])
    net_input = batch["net_input"]
    padded_views = 0
    for view in ("a", "b"):
        source, mask = net_input[f"source_{view}"], net_input[f"padding_mask_{view}"]
        lengths = [len(dataset[i][f"view_{view}"]) for i in range(4)]
        assert source.shape == (4, max(lengths))
        if len(set(lengths)) == 1:
            assert mask is None  # nothing padded
            continue
        padded_views += 1
        assert (~mask).sum(1).tolist() == lengths
        for row, length in enumerate(lengths):
            assert torch.equal(source[row, :length], dataset[row][f"view_{view}"])
            assert not source[row, length:].any()
    assert padded_views > 0


# ---------------------------------------------------------------------------------------------- timing


def tone_burst(onset: float = 0.5, offset: float = 1.5, seconds: float = 3.0) -> torch.Tensor:
    """A 300 Hz tone between ``onset`` and ``offset`` seconds, silence around it."""
    t = torch.arange(int(seconds * SAMPLE_RATE), dtype=torch.float64) / SAMPLE_RATE
    wave = 0.5 * torch.sin(2 * math.pi * 300.0 * t)
    wave[(t < onset) | (t >= offset)] = 0.0
    return wave.float()


def burst_edges(wave: torch.Tensor, hop: int = 128, frame: int = 256):
    """(onset, offset) in seconds: centres of the first and last frames above 30 % of the peak RMS."""
    rms = wave.unfold(0, frame, hop).pow(2).mean(-1).sqrt()
    loud = (rms > 0.3 * rms.max()).nonzero().flatten()
    return [(int(k) * hop + frame / 2) / SAMPLE_RATE for k in (loud[0], loud[-1])]


EDGE_TOLERANCE = 3 * 128 / SAMPLE_RATE  # three STFT hops


@pytest.mark.parametrize("semitones", [-2.0, 2.0, 3.0])
def test_pitch_shift_keeps_the_content_where_it_was(semitones):
    """Only the pitch moves: a tone burst starts and ends at the same time in both views."""
    onset, offset = burst_edges(pitch_shift(tone_burst(), semitones))
    assert onset == pytest.approx(0.5, abs=EDGE_TOLERANCE)
    assert offset == pytest.approx(1.5, abs=EDGE_TOLERANCE)


@pytest.mark.parametrize("speed", [0.9, 1.1])
@pytest.mark.parametrize("semitones", [-2.0, 2.0])
def test_the_perturbed_view_is_the_original_timeline_scaled_by_the_speed_factor(speed, semitones):
    perturber = SpeedPitchPerturber(SAMPLE_RATE, (speed,), (semitones,))
    perturbed = perturber.apply(tone_burst(), Perturbation(speed, semitones, swap=False))
    onset, offset = burst_edges(perturbed)
    assert onset == pytest.approx(0.5 / speed, abs=EDGE_TOLERANCE)
    assert offset == pytest.approx(1.5 / speed, abs=EDGE_TOLERANCE)
    assert abs(len(perturbed) - 3.0 * SAMPLE_RATE / speed) <= 2
    assert 12 * math.log2(peak_frequency(perturbed[: int(1.2 * SAMPLE_RATE / speed)][int(0.6 * SAMPLE_RATE / speed) :])
                          / 300.0) == pytest.approx(12 * math.log2(speed) + semitones, abs=0.1)


# ---------------------------------------------------------------------------------------------- draws


def draws(perturber: SpeedPitchPerturber, count: int = 600):
    return [perturber.draw(np.random.default_rng([11, seed])) for seed in range(count)]


def test_draws_are_uniform_over_the_settings_and_swap_half_the_time():
    drawn = draws(SpeedPitchPerturber(SAMPLE_RATE, (0.9, 1.0, 1.1), (-2.0, 2.0)))
    for speed in (0.9, 1.0, 1.1):
        assert 0.27 <= sum(p.speed == speed for p in drawn) / len(drawn) <= 0.40
    for semitones in (-2.0, 2.0):
        assert 0.43 <= sum(p.semitones == semitones for p in drawn) / len(drawn) <= 0.57
    assert 0.43 <= sum(p.swap for p in drawn) / len(drawn) <= 0.57
    # the swap is drawn independently of the perturbation
    swapped_up = sum(p.swap and p.semitones == 2.0 for p in drawn) / len(drawn)
    assert 0.18 <= swapped_up <= 0.32


def test_swap_views_false_keeps_the_original_first():
    perturber = SpeedPitchPerturber(SAMPLE_RATE, (0.9, 1.1), (-2.0, 2.0), swap_views=False)
    assert not any(p.swap for p in draws(perturber))
    wave = tone(300.0, seconds=0.5)
    for seed in range(8):
        view_a, view_b, drawn = perturber.views(wave, np.random.default_rng(seed))
        assert view_a is wave and torch.equal(view_b, perturber.apply(wave, drawn))


def test_a_drawn_swap_puts_the_perturbed_view_first():
    perturber = SpeedPitchPerturber(SAMPLE_RATE, (0.9, 1.1), (-2.0, 2.0))
    wave = tone(300.0, seconds=0.5)
    orders = set()
    for seed in range(16):
        view_a, view_b, drawn = perturber.views(wave, np.random.default_rng(seed))
        assert drawn == perturber.draw(np.random.default_rng(seed))  # views draws exactly once, first
        original, perturbed = (view_b, view_a) if drawn.swap else (view_a, view_b)
        assert original is wave and torch.equal(perturbed, perturber.apply(wave, drawn))
        assert len(perturbed) != len(wave)
        orders.add(drawn.swap)
    assert orders == {True, False}


# ---------------------------------------------------------------------------------------------- task


def demo_task(**overrides) -> LaserTask:
    # max_sample_size above most demo utterances (1.6-2.6 s): their sizes differ, so the length order is visible
    cfg = LaserTaskConfig(data=DEMO, seed=4, train_subset="train", max_sample_size=40_000, **overrides)
    task = LaserTask(cfg)
    for split in ("train", "valid"):
        task.load_dataset(split)
    return task


def epoch_draws(dataset, epoch: int):
    dataset.set_epoch(epoch)
    return [dataset[i]["perturbation"] for i in range(len(dataset))]


def test_the_task_fixes_validation_draws_across_epochs_and_redraws_training_ones():
    task = demo_task()
    valid, train = task.datasets["valid"], task.datasets["train"]
    assert epoch_draws(valid, 1) == epoch_draws(valid, 2) == epoch_draws(valid, 9)
    assert epoch_draws(train, 1) != epoch_draws(train, 2)
    # training order is reshuffled among equal lengths each epoch; validation order never changes
    assert len(set(train.sizes.tolist())) > 20 and len(set(valid.sizes.tolist())) > 5  # lengths to order by
    assert list(valid.ordered_indices()) == list(np.argsort(valid.sizes, kind="stable")[::-1])
    orders = set()
    for epoch in (1, 2, 3, 4):
        train.set_epoch(epoch)
        orders.add(tuple(train.ordered_indices()))
    assert len(orders) > 1
    for order in orders:
        assert list(train.sizes[list(order)]) == sorted(train.sizes, reverse=True)


def test_the_task_passes_its_perturbation_settings_to_the_dataset():
    task = demo_task(swap_views=False, speed_factors=[0.8, 1.2], pitch_shifts=[3.0], pitch_tolerance=0.1)
    drawn = epoch_draws(task.datasets["train"], 1) + epoch_draws(task.datasets["valid"], 1)
    assert not any(p.swap for p in drawn)
    assert {p.speed for p in drawn} == {0.8, 1.2} and {p.semitones for p in drawn} == {3.0}
    assert task.perturber.pitch_tolerance == 0.1 and task.perturber.sample_rate == 16_000
    swapping = demo_task()
    assert any(p.swap for p in epoch_draws(swapping.datasets["train"], 1))


def test_sizes_and_token_counts_bound_both_views():
    """fairseq batches by num_tokens: the original plus the longest perturbed view it can become."""
    dataset = make_dataset(True)
    for index in range(len(dataset)):
        size = min(dataset.entries[index].num_samples, 24_000)
        assert dataset.size(index) == size
        assert dataset.num_tokens(index) == math.ceil(size * (1 + 1 / 0.9))
        item = dataset[index]
        assert len(item["view_a"]) + len(item["view_b"]) <= dataset.num_tokens(index)
    faster = PairedPerturbedAudioDataset(
        read_manifest(os.path.join(DEMO, "train.tsv")), SpeedPitchPerturber(SAMPLE_RATE, (1.1, 1.2), (2.0,)),
        SAMPLE_RATE, max_sample_size=24_000, min_sample_size=8_000, seed=0,
    )
    assert faster.num_tokens(0) == 2 * faster.size(0)  # never less than two originals


def test_collater_batches_ids_and_leaves_out_nothing_else():
    dataset = make_dataset(True)
    assert dataset.collater([]) == {} and dataset.collater([None]) == {}
    item = dataset[3]
    batch = dataset.collater([item, None, item])
    assert batch["id"].tolist() == [3, 3] and batch["nsentences"] == 2
    net_input = batch["net_input"]
    assert net_input["padding_mask_a"] is None and net_input["padding_mask_b"] is None  # nothing padded
    assert torch.equal(net_input["source_a"], torch.stack([item["view_a"]] * 2))
    assert torch.equal(net_input["source_b"], torch.stack([item["view_b"]] * 2))
    assert len(dataset) == len(dataset.entries) and not dataset.supports_prefetch
    assert not dataset.can_reuse_epoch_itr_across_epochs  # items change with the epoch


def test_task_defaults_are_the_papers_hubert_perturbation():
    cfg = LaserTaskConfig(data=DEMO)
    assert (cfg.sample_rate, cfg.speed_factors, cfg.pitch_shifts, cfg.swap_views) == (
        16_000, [0.9, 1.0, 1.1], [-2.0, 2.0], True)
    assert (cfg.pitch_tolerance, cfg.max_sample_size, cfg.min_sample_size) == (0.05, 400_000, 8_000)
    task = demo_task()
    assert task.source_dictionary is None and task.target_dictionary is None
    assert task.max_positions() == (sys.maxsize, sys.maxsize)
    assert isinstance(LaserTask.setup_task(task.cfg), LaserTask)


@pytest.mark.parametrize("rate", [8 / 9, 9 / 8])
def test_time_stretch_changes_the_duration_by_one_over_the_rate(rate):
    stretched = time_stretch(tone_burst(), rate)
    assert len(stretched) == round(3.0 * SAMPLE_RATE / rate)
    onset, offset = burst_edges(stretched)
    assert onset == pytest.approx(0.5 / rate, abs=EDGE_TOLERANCE)
    assert offset == pytest.approx(1.5 / rate, abs=EDGE_TOLERANCE)
    assert peak_frequency(stretched[int(0.6 * SAMPLE_RATE / rate) : int(1.4 * SAMPLE_RATE / rate)]) == pytest.approx(
        300.0, rel=5e-3)


def test_crops_are_exactly_max_sample_size_at_every_offset_and_reproducible():
    manifest = read_manifest(os.path.join(DEMO, "train.tsv"))
    audio = read_audio(manifest.entries[0].path, SAMPLE_RATE)
    dataset = PairedPerturbedAudioDataset(
        manifest, SpeedPitchPerturber(SAMPLE_RATE, (1.0,), (0.0,), swap_views=False), SAMPLE_RATE,
        max_sample_size=len(audio) - 1, min_sample_size=8_000, seed=0,
    )
    starts = set()
    for epoch in range(1, 13):
        dataset.set_epoch(epoch)
        view = dataset[0]["view_a"]
        assert len(view) == len(audio) - 1
        starts.add(crop_start(audio, view))
    assert starts == {0, 1}
    orders = set()
    for epoch in range(1, 5):  # a dataset built with the defaults draws anew and reshuffles each epoch
        dataset.set_epoch(epoch)
        orders.add(tuple(dataset.ordered_indices()))
    assert len(orders) > 1
    again = PairedPerturbedAudioDataset(
        manifest, dataset.perturber, SAMPLE_RATE, max_sample_size=len(audio) - 1, min_sample_size=8_000, seed=0)
    for epoch in (1, 2):
        dataset.set_epoch(epoch)
        again.set_epoch(epoch)
        assert list(dataset.ordered_indices()) == list(again.ordered_indices())


def test_time_stretch_at_rate_one_gives_the_waveform_back_and_the_pitch_shift_keeps_its_known_level():
    """Hann analysis and synthesis windows: exact reconstruction at rate 1; a shifted 300 Hz tone keeps the
    level torchaudio's stock PitchShift gives it (RMS 0.354 -> ~0.085 at +2 st, measured with PitchShift)."""
    wave = tone(300.0, seconds=3.0)
    torch.testing.assert_close(time_stretch(wave, 1.0), wave, rtol=0, atol=1e-5)
    middle = pitch_shift(wave, 2.0)[SAMPLE_RATE // 2 : -SAMPLE_RATE // 2]
    assert middle.pow(2).mean().sqrt().item() == pytest.approx(0.085, rel=0.1)


def test_the_perturber_shifts_with_its_own_pitch_tolerance():
    wide = SpeedPitchPerturber(SAMPLE_RATE, (1.0,), (2.0,), pitch_tolerance=0.5)
    shifted = wide.apply(tone(300.0), Perturbation(1.0, 2.0, swap=False))
    assert pitch_ratio(2.0, 0.5) == Fraction(8, 7)  # a coarser ratio than the default tolerance's 9/8
    measured = 12 * math.log2(peak_frequency(shifted) / 300.0)
    assert measured == pytest.approx(semitones_of(Fraction(8, 7)), abs=0.02)
    with pytest.raises(ValueError, match="no pitch ratio within 0.0 semitones"):
        SpeedPitchPerturber(SAMPLE_RATE, (1.0,), (2.0,), pitch_tolerance=0.0)  # refused up front


def test_without_shuffling_equal_lengths_keep_their_manifest_order():
    """Longest first, ties in (reversed) manifest order: a stable sort, so an unshuffled order is the same on
    every machine and numpy version (the default quicksort orders ties of 65 items differently)."""
    manifest = read_manifest(os.path.join(DEMO, "train.tsv"))
    dataset = PairedPerturbedAudioDataset(
        manifest, SpeedPitchPerturber(SAMPLE_RATE, (1.0,), (0.0,)), SAMPLE_RATE, max_sample_size=30_000,
        min_sample_size=8_000, seed=0, shuffle=False,
    )
    expected = [int(i) for i in np.argsort(dataset.sizes, kind="stable")[::-1]]
    assert [int(i) for i in np.argsort(dataset.sizes)[::-1]] != expected  # ties the default sort reorders
    assert [int(i) for i in dataset.ordered_indices()] == expected
    assert list(dataset.sizes[expected]) == sorted(dataset.sizes, reverse=True)
