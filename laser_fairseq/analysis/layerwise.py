"""The measures for every layer of one upstream on one set of utterances.

Per utterance (streamed, the perturbed copy's frames are dropped once used): the invariance of every
layer, and the layer's frames, mean-pooled vector and log-mel frames are kept. Then per layer:

- ``input_cka``     linear CKA between the layer's frames and the log-mel frames of all utterances,
                    pooled (each utterance trimmed to the shorter of its two frame counts);
- ``invariance``    mean over utterances of the DTW-aligned cosine similarity to the perturbed copy;
- ``voice_probe``   sentence-grouped cross-validated ridge-probe accuracy of the voice id;
- ``retrieval_map`` cross-voice same-sentence retrieval MAP;
- ``phone_acc``     frame accuracy of a linear (LDA) phone probe trained on other sentences' frames;
- ``phone_per``     its phone error rate (repeats collapsed, silence dropped; lower is better).

The phone probe's training utterances are encoded first (once, unperturbed) into per-layer sufficient
statistics, so their frames are not kept. The label measures are None, with the reason in
``unavailable``, when the labels are missing or the utterances cannot support them (e.g. a single
sentence).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
from torch import Tensor

from ..data.audio import SAMPLE_RATE, read_audio
from ..data.perturbation import SpeedPitchPerturber
from ..models.blockwise import BlockwiseUpstream
from . import measures, phone_probe
from .features import UtteranceLayers, iter_utterance_layers, layer_frames, layer_names
from .phone_labels import PhoneProbeLabels, check_frame_count
from .utterances import UtteranceSet

MEASURES = ("input_cka", "invariance", "voice_probe", "retrieval_map", "phone_acc", "phone_per")
PHONE_MEASURES = ("phone_acc", "phone_per")
ABX_MEASURES = ("abx_within", "abx_across")  # reported only when measured (analyze_layers --abx)

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
    phone_acc: Optional[float] = None
    phone_per: Optional[float] = None
    abx_within: Optional[float] = None  # fastabx triphone ABX error, % (analyze_layers --abx)
    abx_across: Optional[float] = None

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
    phone_acc_chance: Optional[float] = None
    phone_per_chance: Optional[float] = None
    phone_probe: Dict[str, object] = field(default_factory=dict)  # training data, classes, chosen shrinkages
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
    phone_labels: Optional[PhoneProbeLabels] = None,
    phone_labels_missing: str = "no frame labels given",
    each_utterance: Optional[Callable[[UtteranceLayers], None]] = None,
) -> UpstreamAnalysis:
    """The measures for every layer; the phone probe runs when ``phone_labels`` is given, otherwise its
    measures are reported unavailable with the reason ``phone_labels_missing``. ``each_utterance`` sees every
    encoded utterance (its frames per layer, original and perturbed), so a caller can measure more on the same
    encodings instead of running the upstream again."""
    names = layer_names(upstream.num_layers)
    utterances = utterance_set.utterances
    phone_probes, class_counts = (
        train_phone_probes(upstream, phone_labels, device, progress) if phone_labels is not None else (None, None)
    )
    frames: List[List[np.ndarray]] = [[] for _ in names]
    invariance: List[List[float]] = [[] for _ in names]
    log_mels: List[np.ndarray] = []
    perturbations = []
    for done, item in enumerate(
        iter_utterance_layers(upstream, utterances, perturber, seed, device), start=1
    ):
        if phone_labels is not None:
            check_frame_count(phone_labels.test.labels[done - 1], len(item.frames[0]), item.utterance,
                              phone_labels.test.labels_path)
        for layer, (original, perturbed) in enumerate(zip(item.frames, item.perturbed_frames)):
            invariance[layer].append(measures.aligned_cosine_similarity(original, perturbed))
            frames[layer].append(original)
        log_mels.append(item.log_mel)
        if each_utterance is not None:
            each_utterance(item)
        perturbations.append(
            {"index": item.utterance.index, "speed": item.perturbation.speed, "semitones": item.perturbation.semitones}
        )
        progress("encoding utterances", done, len(utterances))

    analysis = UpstreamAnalysis([], len(utterances), sum(len(f) for f in frames[0]), perturbations=perturbations)
    voices, sentences = utterance_set.voices(), utterance_set.sentences()
    probe_reason = voice_probe_unavailable(utterance_set)
    retrieval_reason = retrieval_unavailable(utterance_set)
    phone_reason = "" if phone_labels is not None else phone_labels_missing
    analysis.unavailable.update(
        {
            measure: reason
            for measure, reason in [("voice_probe", probe_reason), ("retrieval_map", retrieval_reason)]
            + [(measure, phone_reason) for measure in PHONE_MEASURES]
            if reason
        }
    )
    if phone_labels is not None:
        describe_phone_probe(analysis, phone_labels, class_counts)
    for layer, name in enumerate(names):
        probe = None if probe_reason else measures.voice_probe(pooled_means(frames[layer]), voices, sentences)
        retrieval = None if retrieval_reason else measures.cross_voice_retrieval(frames[layer], voices, sentences)
        phones = None
        if phone_labels is not None:
            predicted = phone_probe.predict_utterances(phone_probes[layer], frames[layer])
            phones = phone_probe.score(predicted, phone_labels.test.labels, phone_labels.silence)
            analysis.phone_probe["shrinkages"][name] = phone_probes[layer].shrinkage
        analysis.layers.append(
            LayerResult(
                index=layer,
                name=name,
                dim=int(frames[layer][0].shape[1]),
                input_cka=input_likeness(frames[layer], log_mels),
                invariance=float(np.mean(invariance[layer])),
                voice_probe=probe.accuracy if probe else None,
                retrieval_map=retrieval.mean_average_precision if retrieval else None,
                phone_acc=phones.accuracy if phones else None,
                phone_per=phones.error_rate if phones else None,
            )
        )
        if probe:
            analysis.voice_probe_chance, analysis.voice_probe_folds = probe.chance, probe.folds
        if retrieval:
            analysis.retrieval_chance, analysis.retrieval_queries = retrieval.chance, retrieval.queries
        progress("measuring layers", layer + 1, len(names))
    return analysis


def train_phone_probes(
    upstream: BlockwiseUpstream, labels: PhoneProbeLabels, device: str, progress: Progress
) -> Tuple[List[phone_probe.LinearProbe], np.ndarray]:
    """(one probe per layer, the training class counts) from the probe's training utterances, unperturbed
    and streamed: the fitting utterances first, then the held-out ones that choose the shrinkage."""
    return train_frame_probes(lambda waveform: layer_frames(upstream, waveform, device), labels, progress)


def train_frame_probes(
    frames_of: Callable[[Tensor], List[np.ndarray]], labels: PhoneProbeLabels, progress: Progress = _no_progress
) -> Tuple[List[phone_probe.LinearProbe], np.ndarray]:
    """``train_phone_probes`` for any frame features: ``frames_of((S,) waveform)`` -> per feature (T, C)
    frames on the CNN's frame grid (e.g. the layers of an upstream, or input features)."""
    train = labels.train
    trainers: List[phone_probe.ProbeTrainer] = []
    order = np.argsort(labels.selection, kind="stable")  # fitting utterances first
    for done, index in enumerate(order.tolist(), start=1):
        utterance, frame_labels = train.utterances[index], train.labels[index]
        waveform = read_audio(utterance.path, SAMPLE_RATE, where=f"{train.manifest_path}:{utterance.line}")
        layers = frames_of(waveform)
        check_frame_count(frame_labels, len(layers[0]), utterance, train.labels_path)
        if not trainers:
            trainers = [phone_probe.ProbeTrainer(frames.shape[1], len(labels.symbols)) for frames in layers]
        for trainer, frames in zip(trainers, layers):
            trainer.add(frames, frame_labels, held_out=bool(labels.selection[index]))
        progress("encoding phone probe training utterances", done, len(order))
    return [trainer.finish() for trainer in trainers], trainers[0].class_counts


def describe_phone_probe(analysis: UpstreamAnalysis, labels: PhoneProbeLabels, class_counts: np.ndarray):
    """Chance levels (always the training majority class) and the probe's data, into ``analysis``."""
    chance = phone_probe.majority_chance(class_counts, labels.test.labels, labels.silence)
    analysis.phone_acc_chance = chance.accuracy
    analysis.phone_per_chance = None if math.isnan(chance.error_rate) else chance.error_rate
    analysis.phone_probe = dict(
        labels.settings,
        majority_class=labels.symbols[int(np.argmax(class_counts))],
        test_frames=chance.frames,
        test_reference_phones=chance.reference_phones,
        shrinkages={},
    )


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
