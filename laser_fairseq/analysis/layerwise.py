"""The four measures for every layer of one upstream on one set of utterances.

Per utterance (streamed, the perturbed copy's frames are dropped once used): the invariance of every
layer, and the layer's frames, mean-pooled vector and log-mel frames are kept. Then per layer:

- ``input_cka``     linear CKA between the layer's frames and the log-mel frames of all utterances,
                    pooled (each utterance trimmed to the shorter of its two frame counts);
- ``invariance``    mean over utterances of the DTW-aligned cosine similarity to the perturbed copy;
- ``voice_probe``   sentence-grouped cross-validated ridge-probe accuracy of the voice id;
- ``retrieval_map`` cross-voice same-sentence retrieval MAP.

The label measures are None, with the reason in ``unavailable``, when the labels are missing or the
utterances cannot support them (e.g. a single sentence).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from ..data.perturbation import SpeedPitchPerturber
from ..models.blockwise import BlockwiseUpstream
from . import measures
from .features import iter_utterance_layers, layer_names
from .utterances import UtteranceSet

MEASURES = ("input_cka", "invariance", "voice_probe", "retrieval_map")

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class LayerResult:
    index: int
    name: str
    dim: int
    input_cka: float
    invariance: float
    voice_probe: Optional[float]
    retrieval_map: Optional[float]

    def value(self, measure: str) -> Optional[float]:
        return getattr(self, measure)


@dataclass
class UpstreamAnalysis:
    layers: List[LayerResult]
    utterances: int
    frames: int
    voice_probe_chance: Optional[float] = None
    voice_probe_folds: Optional[int] = None
    retrieval_chance: Optional[float] = None
    retrieval_queries: Optional[int] = None
    unavailable: Dict[str, str] = field(default_factory=dict)  # measure -> why it is not reported
    perturbations: List[dict] = field(default_factory=list)  # per utterance: index, speed, semitones


def _no_progress(stage: str, done: int, total: int):
    pass


def analyze_upstream(
    upstream: BlockwiseUpstream,
    utterance_set: UtteranceSet,
    perturber: SpeedPitchPerturber,
    seed: int,
    device: str = "cpu",
    progress: Progress = _no_progress,
) -> UpstreamAnalysis:
    names = layer_names(upstream.num_layers)
    utterances = utterance_set.utterances
    frames: List[List[np.ndarray]] = [[] for _ in names]
    invariance: List[List[float]] = [[] for _ in names]
    log_mels: List[np.ndarray] = []
    perturbations = []
    for done, item in enumerate(
        iter_utterance_layers(upstream, utterances, perturber, seed, device), start=1
    ):
        for layer, (original, perturbed) in enumerate(zip(item.frames, item.perturbed_frames)):
            invariance[layer].append(measures.aligned_cosine_similarity(original, perturbed))
            frames[layer].append(original)
        log_mels.append(item.log_mel)
        perturbations.append(
            {"index": item.utterance.index, "speed": item.perturbation.speed, "semitones": item.perturbation.semitones}
        )
        progress("encoding utterances", done, len(utterances))

    analysis = UpstreamAnalysis([], len(utterances), sum(len(f) for f in frames[0]), perturbations=perturbations)
    voices, sentences = utterance_set.voices(), utterance_set.sentences()
    probe_reason = voice_probe_unavailable(utterance_set)
    retrieval_reason = retrieval_unavailable(utterance_set)
    analysis.unavailable.update(
        {measure: reason for measure, reason in (("voice_probe", probe_reason), ("retrieval_map", retrieval_reason)) if reason}
    )
    for layer, name in enumerate(names):
        probe = None if probe_reason else measures.voice_probe(pooled_means(frames[layer]), voices, sentences)
        retrieval = None if retrieval_reason else measures.cross_voice_retrieval(frames[layer], voices, sentences)
        analysis.layers.append(
            LayerResult(
                index=layer,
                name=name,
                dim=int(frames[layer][0].shape[1]),
                input_cka=input_likeness(frames[layer], log_mels),
                invariance=float(np.mean(invariance[layer])),
                voice_probe=probe.accuracy if probe else None,
                retrieval_map=retrieval.mean_average_precision if retrieval else None,
            )
        )
        if probe:
            analysis.voice_probe_chance, analysis.voice_probe_folds = probe.chance, probe.folds
        if retrieval:
            analysis.retrieval_chance, analysis.retrieval_queries = retrieval.chance, retrieval.queries
        progress("measuring layers", layer + 1, len(names))
    return analysis


def input_likeness(layer_frames: List[np.ndarray], log_mels: List[np.ndarray]) -> float:
    """Linear CKA of the pooled frames of all utterances against their log-mel frames, trimmed to match."""
    lengths = [min(len(frames), len(mel)) for frames, mel in zip(layer_frames, log_mels)]
    pooled_layer = np.concatenate([frames[:n] for frames, n in zip(layer_frames, lengths)])
    pooled_mel = np.concatenate([mel[:n] for mel, n in zip(log_mels, lengths)])
    return measures.linear_cka(pooled_layer, pooled_mel)


def pooled_means(sequences: List[np.ndarray]) -> np.ndarray:
    """(U, C): the mean frame of each utterance."""
    return np.stack([seq.mean(axis=0) for seq in sequences])


def voice_probe_unavailable(utterance_set: UtteranceSet) -> str:
    """Why the voice probe cannot be measured on these utterances ("" if it can)."""
    if not utterance_set.has_labels:
        return utterance_set.labels_missing
    sentences, voices = set(utterance_set.sentences()), set(utterance_set.voices())
    if len(sentences) < 2 or len(voices) < 2:
        return (
            f"the probe holds whole sentences out, so it needs >= 2 sentences and >= 2 voices; these "
            f"{len(utterance_set.utterances)} utterances have {len(sentences)} sentence(s) and {len(voices)} "
            f"voice(s) (raise --max-utterances)"
        )
    return ""


def retrieval_unavailable(utterance_set: UtteranceSet) -> str:
    """Why cross-voice retrieval cannot be measured on these utterances ("" if it can)."""
    if not utterance_set.has_labels:
        return utterance_set.labels_missing
    voices_of: Dict[str, set] = {}
    for utterance in utterance_set.utterances:
        voices_of.setdefault(utterance.sentence, set()).add(utterance.voice)
    if not any(len(voices) >= 2 for voices in voices_of.values()):
        return "no sentence is spoken by two different voices among these utterances (raise --max-utterances)"
    return ""
