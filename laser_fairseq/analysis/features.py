"""Per-layer frames of an upstream for one utterance and its perturbed copy, plus its log-mel frames.

Layers, in order (``layer_names``):

    index 0      ``cnn``        CNN feature extractor output, after the model's feature layer norm (C_cnn)
    index 1      ``block0_in``  input of transformer block 0: projection + positional conv (+ the encoder
                                layer norm of post-LN models)
    index k + 1  ``block<k>``   output of transformer block k (1-based); the last one includes the final
                                layer norm of pre-LN models

(``block0_in`` .. ``block<L>`` are s3prl's / fairseq's hidden states 0 .. L.)

Every utterance is run alone (a batch of one), as the block interface embeds padded batches anyway.
Its perturbed copy is LASER's own perturbation (``SpeedPitchPerturber``) drawn from
``np.random.default_rng([seed, utterance index])``: the same utterance gets the same copy whatever the
subset, order or checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, List, Sequence, Tuple

import numpy as np
import torch
import torchaudio
from torch import Tensor

from ..data.audio import SAMPLE_RATE, read_audio
from ..data.frames import FRAME_HOP, FRAME_WINDOW
from ..data.perturbation import Perturbation, SpeedPitchPerturber
from ..models.blockwise import BlockwiseUpstream
from .utterances import Utterance

MEL_BINS = 80
LOG_FLOOR = 1e-6

# LASER's HuBERT Base perturbation (the task's defaults, examples/laser/README.md)
DEFAULT_SPEED_FACTORS = (0.9, 1.0, 1.1)
DEFAULT_PITCH_SHIFTS = (-2.0, 2.0)


def layer_names(num_blocks: int) -> List[str]:
    """``["cnn", "block0_in", "block1", ..., "block<num_blocks>"]``; a row's index is its position here."""
    return ["cnn", "block0_in"] + [f"block{k}" for k in range(1, num_blocks + 1)]


@torch.no_grad()
def layer_frames(upstream: BlockwiseUpstream, waveform: Tensor, device: str) -> List[np.ndarray]:
    """(S,) waveform -> one float32 (T, C_layer) array per entry of ``layer_names``: the CNN output, then
    ``BlockwiseUpstream.hidden_states`` (from the same pass, so the CNN runs once)."""
    source = waveform.to(device=device, dtype=torch.float32)[None]
    cnn, hidden = upstream.conv_and_hidden_states(source)
    return [layer[0].float().cpu().numpy() for layer in [cnn, *hidden]]


@lru_cache(maxsize=1)
def _mel_transform() -> torchaudio.transforms.MelSpectrogram:
    # the CNN's window and hop, so mel frame t covers the samples of CNN frame t
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=FRAME_WINDOW, win_length=FRAME_WINDOW, hop_length=FRAME_HOP,
        n_mels=MEL_BINS, center=False, power=2.0,
    )


def log_mel_frames(waveform: Tensor) -> np.ndarray:
    """(S,) waveform -> (T, 80) log power mel frames, 25 ms windows every 20 ms, not centred.

    T = (S - 400) // 320 + 1, the CNN's frame count for HuBERT/WavLM.
    """
    mel = _mel_transform()(waveform.float().cpu())
    return torch.log(mel + LOG_FLOOR).T.numpy().astype(np.float32)


def make_perturber(
    speed_factors: Sequence[float] = DEFAULT_SPEED_FACTORS, pitch_shifts: Sequence[float] = DEFAULT_PITCH_SHIFTS
) -> SpeedPitchPerturber:
    return SpeedPitchPerturber(SAMPLE_RATE, tuple(speed_factors), tuple(pitch_shifts), swap_views=False)


def perturbed_copy(
    perturber: SpeedPitchPerturber, waveform: Tensor, seed: int, index: int
) -> Tuple[Tensor, Perturbation]:
    """The perturbed copy of utterance ``index`` and the perturbation drawn for it."""
    perturbation = perturber.draw(np.random.default_rng([seed, index]))
    return perturber.apply(waveform, perturbation), perturbation


@dataclass
class UtteranceLayers:
    utterance: Utterance
    frames: List[np.ndarray]  # per layer, (T, C_layer)
    perturbed_frames: List[np.ndarray]  # per layer, (T', C_layer), T' ~ T / speed
    log_mel: np.ndarray  # (T_mel, 80), T_mel == T for the real CNN
    perturbation: Perturbation


def iter_utterance_layers(
    upstream: BlockwiseUpstream,
    utterances: Sequence[Utterance],
    perturber: SpeedPitchPerturber,
    seed: int,
    device: str,
) -> Iterator[UtteranceLayers]:
    """Read, perturb and encode the utterances one at a time."""
    for utterance in utterances:
        waveform = read_audio(utterance.path, SAMPLE_RATE, where=f"line {utterance.line}")
        perturbed, perturbation = perturbed_copy(perturber, waveform, seed, utterance.index)
        yield UtteranceLayers(
            utterance=utterance,
            frames=layer_frames(upstream, waveform, device),
            perturbed_frames=layer_frames(upstream, perturbed, device),
            log_mel=log_mel_frames(waveform),
            perturbation=perturbation,
        )
