"""Reading and checking one audio file as LASER's upstream models expect it (mono float, known rate)."""

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

SAMPLE_RATE = 16_000  # the rate HuBERT and WavLM take: the corpora, features and exports of this package


_REMOVE_IT = "remove it from the manifest (scripts/prepare_librispeech.py leaves such files out)"


class AudioError(ValueError):
    """Audio that cannot be used; the message names the file and what to do."""


def read_audio(path: str, sample_rate: int, where: str = "") -> Tensor:
    """Read a mono file at ``sample_rate`` as a (S,) float32 tensor, refusing anything else.

    ``where`` (e.g. ``manifest.tsv:12``) is put in front of error messages.
    """
    prefix = f"{where}: " if where else ""
    samples, file_rate = load_samples(path, prefix)
    problem = audio_problem(samples, file_rate, sample_rate)
    if problem:
        raise AudioError(f"{prefix}{path}: {problem}")
    return torch.from_numpy(np.ascontiguousarray(samples[:, 0]))


def load_samples(path: str, prefix: str = ""):
    """(samples (S, channels) float32 array, sample rate) of any file soundfile reads; AudioError otherwise."""
    try:
        return sf.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for unreadable/corrupt files
        raise AudioError(
            f"{prefix}cannot read audio file {path}: {error}; check that it is a complete wav/flac file "
            f"(re-download or re-convert it) or remove it from the manifest"
        ) from None


def audio_problem(samples: np.ndarray, file_rate: int, sample_rate: int) -> str:
    """Why (S, channels) samples at ``file_rate`` are unusable, or "" when they are fine."""
    if file_rate != sample_rate:
        return f"sample rate is {file_rate} Hz, expected {sample_rate} Hz; resample the corpus (e.g. sox in.wav -r {sample_rate} out.flac)"
    if samples.shape[1] != 1:
        return f"has {samples.shape[1]} channels, expected mono; downmix it (e.g. sox in.wav -c 1 out.flac)"
    if samples.shape[0] == 0:
        return f"is empty (0 samples); {_REMOVE_IT}"
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        return f"contains {bad} NaN or infinite sample(s); re-convert the file or {_REMOVE_IT}"
    if not np.any(samples):
        return f"is all silence (every sample is 0); {_REMOVE_IT}"
    return ""
