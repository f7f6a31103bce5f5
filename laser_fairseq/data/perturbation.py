"""Speed and pitch perturbation of a waveform, the "perturbed view" of LASER.

The view is made with torchaudio: speed perturbation (``torchaudio.functional.speed``, a polyphase
resampling) followed by a pitch shift (phase-vocoder time stretch, then resampling back to the original
length). torchaudio's stock ``PitchShift`` resamples from ``int(sr / rate)`` Hz to ``sr``; for +-2 semitones
at 16 kHz that ratio has no common factor (17959:16000): its first call builds a 16000 x 17973 float32 sinc
kernel (1.15 GB, ~4.7 GB peak while building) and took 8-25 s on the project's 2-core machine, later calls
0.6-3.5 s per 4 s of audio, depending on load. Here the pitch ratio is instead the closest fraction with
small terms within ``tolerance`` semitones of the request (e.g. 9/8 = 2.039 semitones for +2), whose
resampling kernel is tiny: a 4 s speed + pitch perturbation takes 12-56 ms on one core, and shifts by a
known amount.
"""

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Tuple

import numpy as np
import torch
import torchaudio.functional as AF
from torch import Tensor

N_FFT = 512
HOP_LENGTH = 128


@lru_cache(maxsize=None)
def pitch_ratio(semitones: float, tolerance: float = 0.05) -> Fraction:
    """The frequency ratio with the smallest terms within ``tolerance`` semitones of ``semitones``."""
    target = 2.0 ** (semitones / 12.0)
    for max_denominator in range(1, 1000):
        ratio = Fraction(target).limit_denominator(max_denominator)
        if ratio > 0 and abs(semitones_of(ratio) - semitones) <= tolerance:  # below 1/2, small terms give 0
            return ratio
    raise ValueError(f"no pitch ratio within {tolerance} semitones of {semitones}")


def semitones_of(ratio: Fraction) -> float:
    """The pitch shift in semitones that a frequency ratio applies."""
    return 12.0 * math.log2(ratio)


@lru_cache(maxsize=4)
def _hann_window(n_fft: int) -> Tensor:
    return torch.hann_window(n_fft)


@lru_cache(maxsize=4)
def _phase_advance(n_fft: int, hop_length: int) -> Tensor:
    return torch.linspace(0, math.pi * hop_length, n_fft // 2 + 1)[..., None]


def time_stretch(waveform: Tensor, rate: float) -> Tensor:
    """Phase-vocoder time stretch of a (S,) waveform: ``rate`` > 1 makes it shorter, pitch unchanged.

    Returns a waveform of ``round(S / rate)`` samples.
    """
    window = _hann_window(N_FFT)
    spectrum = torch.stft(
        waveform, N_FFT, HOP_LENGTH, window=window, return_complex=True
    )
    stretched = AF.phase_vocoder(spectrum, rate, _phase_advance(N_FFT, HOP_LENGTH))
    length = int(round(waveform.shape[-1] / rate))
    return torch.istft(stretched, N_FFT, HOP_LENGTH, window=window, length=length)


def pitch_shift(waveform: Tensor, semitones: float, tolerance: float = 0.05) -> Tensor:
    """Shift the pitch of a (S,) waveform, keeping its length; see ``pitch_ratio`` for the exact amount."""
    if semitones == 0:
        return waveform
    ratio = pitch_ratio(semitones, tolerance)
    # Stretch to S * ratio samples, then resample by denominator/numerator back to S samples: played at the
    # original rate, every frequency is multiplied by the ratio.
    stretched = time_stretch(waveform, 1.0 / float(ratio))
    shifted = AF.resample(stretched, ratio.numerator, ratio.denominator)
    return _fit_length(shifted, waveform.shape[-1])


def speed_perturb(waveform: Tensor, sample_rate: int, factor: float) -> Tensor:
    """Play a (S,) waveform ``factor`` times faster (tempo and pitch), about S / factor samples."""
    if factor == 1.0:
        return waveform
    perturbed, _ = AF.speed(waveform, sample_rate, factor)
    return perturbed


def _fit_length(waveform: Tensor, length: int) -> Tensor:
    if waveform.shape[-1] >= length:
        return waveform[..., :length]
    return torch.nn.functional.pad(waveform, (0, length - waveform.shape[-1]))


@dataclass(frozen=True)
class Perturbation:
    """One drawn perturbation: speed factor, pitch shift in semitones, and whether the views swap."""

    speed: float
    semitones: float
    swap: bool


@dataclass(frozen=True)
class SpeedPitchPerturber:
    """Draws and applies LASER's perturbation: a speed factor, then a pitch shift, views swapped at random."""

    sample_rate: int
    speed_factors: Tuple[float, ...]
    pitch_shifts: Tuple[float, ...]
    pitch_tolerance: float = 0.05
    swap_views: bool = True

    def __post_init__(self):
        if not self.speed_factors or any(f <= 0 for f in self.speed_factors):
            raise ValueError(f"speed_factors must be positive numbers, got {list(self.speed_factors)}")
        if not self.pitch_shifts:
            raise ValueError("pitch_shifts must hold at least one value (use [0] for no pitch shift)")
        for semitones in self.pitch_shifts:
            pitch_ratio(semitones, self.pitch_tolerance)  # fail at start-up, not in a worker

    def draw(self, rng: np.random.Generator) -> Perturbation:
        """Draw one perturbation from ``rng``."""
        speed = float(self.speed_factors[rng.integers(len(self.speed_factors))])
        semitones = float(self.pitch_shifts[rng.integers(len(self.pitch_shifts))])
        swap = bool(self.swap_views and rng.random() < 0.5)
        return Perturbation(speed, semitones, swap)

    def apply(self, waveform: Tensor, perturbation: Perturbation) -> Tensor:
        """The perturbed copy of a (S,) float waveform."""
        sped = speed_perturb(waveform, self.sample_rate, perturbation.speed)
        return pitch_shift(sped, perturbation.semitones, self.pitch_tolerance)

    def views(self, waveform: Tensor, rng: np.random.Generator) -> Tuple[Tensor, Tensor, Perturbation]:
        """(view_a, view_b, perturbation): the original and its perturbed copy, in a random order."""
        perturbation = self.draw(rng)
        perturbed = self.apply(waveform, perturbation)
        if perturbation.swap:
            return perturbed, waveform, perturbation
        return waveform, perturbed, perturbation

