"""Speed + pitch perturbation: the amounts applied, and the paired dataset's reproducible draws."""

import math
import os

import numpy as np
import pytest
import torch

from laser_fairseq.data.manifest import read_manifest
from laser_fairseq.data.paired_dataset import PairedPerturbedAudioDataset
from laser_fairseq.data.perturbation import (
    SpeedPitchPerturber,
    pitch_ratio,
    pitch_shift,
    semitones_of,
    speed_perturb,
)

SAMPLE_RATE = 16_000
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


@pytest.mark.parametrize("semitones", [-2.0, 2.0, 3.0, -1.0])
def test_pitch_shift_moves_a_tone_by_the_requested_semitones(semitones):
    source = tone(300.0)
    shifted = pitch_shift(source, semitones)
    assert shifted.shape == source.shape
    measured = 12 * math.log2(peak_frequency(shifted) / peak_frequency(source))
    assert abs(measured - semitones) <= 0.05
    assert abs(measured - semitones_of(pitch_ratio(semitones))) <= 0.01


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


def test_validation_draws_ignore_the_epoch_and_views_keep_the_same_content():
    dataset = make_dataset(True)
    dataset.set_epoch(1)
    before = [dataset[i]["perturbation"] for i in range(12)]
    dataset.set_epoch(7)
    assert before == [dataset[i]["perturbation"] for i in range(12)]
    swaps = [p.swap for p in before]
    assert any(swaps) and not all(swaps)  # both view orders occur
    item = dataset[0]
    original = item["view_b"] if item["perturbation"].swap else item["view_a"]
    perturbed = item["view_a"] if item["perturbation"].swap else item["view_b"]
    assert abs(len(perturbed) - len(original) / item["perturbation"].speed) <= 2
    assert len(original) <= 24_000  # cropped before perturbing


def test_collater_pads_both_views_with_masks():
    dataset = make_dataset(True)
    batch = dataset.collater([dataset[i] for i in range(4)])
    net_input = batch["net_input"]
    for view in ("a", "b"):
        source, mask = net_input[f"source_{view}"], net_input[f"padding_mask_{view}"]
        lengths = [len(dataset[i][f"view_{view}"]) for i in range(4)]
        assert source.shape == (4, max(lengths))
        if mask is not None:
            assert (~mask).sum(1).tolist() == lengths
