"""Phone information of the model inputs, as a bar for the layers: the layer analysis' phone probe (LDA,
same training and test utterances) on log-mel frames (80-d) and on MFCC frames (39-d with deltas, every other
100 Hz frame), both on the CNN's 50 Hz grid (frame t covers samples 320 t .. 320 t + 400)."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
from torch import Tensor

from ..analysis import phone_probe
from ..analysis.features import log_mel_frames
from ..data.audio import SAMPLE_RATE
from ..analysis.layerwise import train_frame_probes
from ..analysis.phone_labels import PhoneProbeLabels
from ..data.audio import read_audio
from .features import MfccReader

INPUTS = ("log_mel", "mfcc")


def input_frames(waveform: Tensor) -> List[np.ndarray]:
    """(S,) waveform -> [log-mel (T, 80), MFCC (T, 39)], T = (S - 400) // 320 + 1."""
    return [log_mel_frames(waveform), MfccReader()(waveform)[::2]]


def input_phone_scores(labels: PhoneProbeLabels) -> Dict[str, dict]:
    """{"log_mel": {"phone_acc", "phone_per"}, "mfcc": {...}} on the analysed (test) utterances."""
    probes, _ = train_frame_probes(input_frames, labels)
    test = labels.test
    frames = [input_frames(read_audio(u.path, SAMPLE_RATE, where=f"{test.manifest_path}:{u.line}"))
              for u in test.utterances]
    scores = {}
    for index, name in enumerate(INPUTS):
        predicted = phone_probe.predict_utterances(probes[index], [per_input[index] for per_input in frames])
        result = phone_probe.score(predicted, test.labels, labels.silence)
        scores[name] = {"phone_acc": result.accuracy, "phone_per": result.error_rate}
    return scores
