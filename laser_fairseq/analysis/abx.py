"""ABX phone discriminability of every layer of an upstream, and of its inputs, through fastabx.

``abx_of_upstream`` encodes the utterances of a split once (every layer of the upstream, ``features.layer_frames``,
and the log-mel and MFCC input frames of ``pretraining.input_baselines``, all on the 50 Hz frame grid of the
frame phone labels), writes the split's triphone items (from its ``{split}.phn`` frame labels, speaker = the
utterance's voice) as a ZeroSpeech item file, and has fastabx score the within-voice and across-voice triphone
ABX error of each feature (``abx_fastabx.triphone_abx``). Error rates are reported in %, lower is better,
chance is 50 %.

A split is ``CORPUS/{split}.tsv`` with ``{split}.phn`` (frame phone labels), ``dict.phn.txt`` and
``{split}.voice`` beside it, as the synthetic corpus generator writes them (for LibriSpeech: docs/abx.md).
Every problem is an ``AbxInputError`` naming the file and the fix.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from ..data.audio import SAMPLE_RATE, read_audio
from ..data.frames import SILENCE
from ..data.manifest import read_manifest
from ..models.blockwise import BlockwiseUpstream
from . import abx_fastabx
from .features import layer_frames, layer_names
from .phone_labels import DICT_NAME, LABELS_EXTENSION, check_frame_count, read_frame_labels, read_phone_dict
from .utterances import Utterance, load_utterances, side_file_path

INPUT_NAMES = ("log-mel", "mfcc")  # the reference rows, in the order of input_baselines.input_frames
Progress = Callable[[str, int, int], None]


class AbxInputError(ValueError):
    """A split that ABX cannot be measured on; the message names the file and the fix."""


@dataclass(frozen=True)
class AbxSplit:
    manifest_path: str
    root: str  # the manifest's audio root: item files name audio files relative to it
    extension: str  # of every audio file, e.g. ".flac"
    utterances: List[Utterance]
    labels: List[np.ndarray]  # per utterance, (T,) indices into symbols
    labels_path: str
    symbols: List[str]
    items: List[abx_fastabx.Item]


def available_splits(corpus: str) -> List[str]:
    return sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(corpus, "*.tsv")))


def load_abx_split(corpus: str, split: str, max_utterances: Optional[int] = None) -> AbxSplit:
    """The utterances, frame labels and triphone items of ``corpus/{split}.tsv``."""
    manifest_path = os.path.join(corpus, f"{split}.tsv")
    if not os.path.isdir(corpus):
        raise AbxInputError(f"{corpus}: corpus folder not found (--data); make one with "
                            f"scripts/make_synthetic_corpus.py or scripts/prepare_librispeech.py")
    if not os.path.isfile(manifest_path):
        splits = available_splits(corpus)
        raise AbxInputError(
            f"{manifest_path}: no such split; {corpus} has "
            f"{', '.join(splits) if splits else 'no *.tsv manifest'} (--split NAME)"
        )
    labels_path = side_file_path(manifest_path, LABELS_EXTENSION)
    if not os.path.isfile(labels_path):
        raise AbxInputError(
            f"{labels_path}: not found: split {split!r} has no frame phone labels, and ABX needs the phones' "
            f"positions; use a split that has them (the synthetic corpus writes them for every split) or write "
            f"them with scripts/alignments_to_frame_labels.py from forced alignments (docs/phone_probe.md)"
        )
    dict_path = os.path.join(corpus, DICT_NAME)
    if not os.path.isfile(dict_path):
        raise AbxInputError(f"{dict_path}: phone dictionary not found; it belongs beside {labels_path} "
                            f"(scripts/alignments_to_frame_labels.py writes both)")
    utterance_set = load_utterances(manifest_path, max_utterances=max_utterances)
    if any(u.voice is None for u in utterance_set.utterances):
        raise AbxInputError(
            f"{side_file_path(manifest_path, 'voice')}: not found: across-voice ABX needs the voice (speaker) of "
            f"every utterance, one id per audio line of {manifest_path} (the corpus tools write it; for "
            f"LibriSpeech the speaker id)"
        )
    manifest = read_manifest(manifest_path)
    extensions = sorted({os.path.splitext(entry.path)[1] for entry in manifest.entries})
    if len(extensions) != 1 or not extensions[0]:
        raise AbxInputError(f"{manifest_path}: the audio files must share one extension for fastabx's item file "
                            f"(found {', '.join(map(repr, extensions))})")
    symbols = read_phone_dict(dict_path)
    indices = [u.index for u in utterance_set.utterances]
    labels = read_frame_labels(labels_path, manifest, symbols, dict_path, indices)
    items = [
        item
        for utterance, frame_labels in zip(utterance_set.utterances, labels)
        for item in abx_fastabx.triphone_items(
            abx_fastabx.file_key(utterance.path, manifest.root, extensions[0]), frame_labels, symbols,
            utterance.voice, SILENCE,
        )
    ]
    if len({item.speaker for item in items}) < 2:
        raise AbxInputError(f"{manifest_path}: across-voice ABX needs >= 2 voices among the utterances, found "
                            f"{len({item.speaker for item in items})} (raise --max-utterances or use another split)")
    return AbxSplit(manifest_path, manifest.root, extensions[0], utterance_set.utterances, labels, labels_path,
                    symbols, items)


def input_frames(waveform: torch.Tensor) -> List[np.ndarray]:
    """[log-mel (T, 80), MFCC (T, 39)] on the 50 Hz frame grid."""
    from ..pretraining.input_baselines import input_frames as frames

    return frames(waveform)


def encode_split(upstream: Optional[BlockwiseUpstream], split: AbxSplit, device: str = "cpu",
                 progress: Optional[Progress] = None, layers: Optional[Sequence[str]] = None,
                 inputs: bool = True) -> Dict[str, Dict[str, torch.Tensor]]:
    """{feature name: {#file: (T, C) float32 tensor}} for the ``layers`` of ``upstream`` (every layer when None;
    none without an upstream) and, if ``inputs``, the log-mel and MFCC inputs; every utterance's frame count is
    checked against its labels."""
    all_layers = layer_names(upstream.num_layers) if upstream is not None else []
    unknown = [name for name in layers or () if name not in all_layers]
    if unknown:
        raise AbxInputError(f"no layer(s) {unknown} in the upstream: its layers are {all_layers}")
    wanted = list(all_layers if layers is None else layers)
    names = wanted + (list(INPUT_NAMES) if inputs else [])
    features: Dict[str, Dict[str, torch.Tensor]] = {name: {} for name in names}
    for done, (utterance, labels) in enumerate(zip(split.utterances, split.labels), start=1):
        waveform = read_audio(utterance.path, SAMPLE_RATE, where=f"{split.manifest_path}:{utterance.line}")
        frames = dict(zip(all_layers, layer_frames(upstream, waveform, device))) if wanted else {}
        if inputs:
            frames.update(zip(INPUT_NAMES, input_frames(waveform)))
        key = abx_fastabx.file_key(utterance.path, split.root, split.extension)
        for name in names:
            check_frame_count(labels, len(frames[name]), utterance, split.labels_path)
            features[name][key] = torch.from_numpy(np.ascontiguousarray(frames[name], dtype=np.float32))
        if progress is not None:
            progress("encoding utterances", done, len(split.utterances))
    return features


def score_features(item_path: str, split: AbxSplit, features: Dict[str, torch.Tensor]) -> Dict[str, float]:
    """{"within": %, "across": %} of one feature through fastabx."""
    dataset = abx_fastabx.dataset_from_features(item_path, split.root, split.extension, features)
    return {mode: 100.0 * error for mode, error in abx_fastabx.triphone_abx(dataset).items()}


def check_polars_threads():
    if abx_fastabx.polars_threads() != 1:
        raise AbxInputError(
            f"polars runs {abx_fastabx.polars_threads()} threads: fastabx's across-voice subsampling is then not "
            f"reproducible; set POLARS_MAX_THREADS=1 before polars is imported (import laser_fairseq.analysis.abx "
            f"first)")


def abx_of_upstream(upstream: Optional[BlockwiseUpstream], split: AbxSplit, item_path: str, device: str = "cpu",
                    progress: Optional[Progress] = None) -> dict:
    """``{"layers": {name: {"within": %, "across": %}}, "inputs": {"log-mel": ..., "mfcc": ...}, "items": counts,
    "seconds": {...}}``; writes the split's item file to ``item_path`` (the file fastabx reads)."""
    check_polars_threads()
    started = time.monotonic()
    abx_fastabx.write_item_file(item_path, split.items)
    features = encode_split(upstream, split, device, progress)
    encoded = time.monotonic()
    scores = {}
    for done, (name, per_file) in enumerate(features.items(), start=1):
        scores[name] = score_features(item_path, split, per_file)
        if progress is not None:
            progress("scoring ABX", done, len(features))
    finished = time.monotonic()
    return {
        "layers": {name: scores[name] for name in features if name not in INPUT_NAMES},
        "inputs": {name: scores[name] for name in INPUT_NAMES},
        "items": abx_fastabx.item_counts(split.items),
        "seconds": {"encoding": round(encoded - started, 1), "scoring": round(finished - encoded, 1),
                    "total": round(finished - started, 1)},
    }


def abx_settings() -> dict:
    """What fastabx was asked to compute (for the result files)."""
    return {
        "library": f"fastabx {abx_fastabx.fastabx_version()}",
        "task": "triphone ABX, ZeroSpeech 2021 (fastabx.zerospeech_abx's settings): ON #phone BY prev-phone, "
                "next-phone; within: BY speaker, across: ACROSS speaker; speaker = voice",
        "distance": abx_fastabx.DISTANCE,
        "alignment": "dtw",
        "max_size_group": abx_fastabx.MAX_SIZE_GROUP,
        "max_x_across": abx_fastabx.MAX_X_ACROSS,
        "seed": abx_fastabx.SEED,
        "frequency_hz": abx_fastabx.FREQUENCY,
        "polars_threads": abx_fastabx.polars_threads(),
        "unit": "error rate in %, lower is better, chance 50",
    }


def abx_of_named_layers(upstream: BlockwiseUpstream, split: AbxSplit, item_path: str, layers: Sequence[str],
                        device: str = "cpu") -> Dict[str, Dict[str, float]]:
    """``{layer: {"within": %, "across": %}}`` of the named layers only (no input rows): the effect table's top
    block and best layer; writes the item file to ``item_path``."""
    check_polars_threads()
    abx_fastabx.write_item_file(item_path, split.items)
    features = encode_split(upstream, split, device, layers=layers, inputs=False)
    return {name: score_features(item_path, split, per_file) for name, per_file in features.items()}


def layer_scores_from_frames(frames_per_layer: Sequence[Dict[str, torch.Tensor]], split: AbxSplit,
                             item_path: str) -> List[Dict[str, float]]:
    """ABX of per-layer features already computed elsewhere (analyze_layers --abx)."""
    check_polars_threads()
    abx_fastabx.write_item_file(item_path, split.items)
    return [score_features(item_path, split, per_file) for per_file in frames_per_layer]


class LayerFrameCollector:
    """Keeps the original frames of every layer of each utterance the layer-wise analysis encodes (its
    ``each_utterance`` callback), keyed as the split's item file names them: ``per_layer[i][#file]`` = (T, C)."""

    def __init__(self, split: AbxSplit):
        self.split = split
        self.per_layer: List[Dict[str, torch.Tensor]] = []

    def __call__(self, item) -> None:
        if not self.per_layer:
            self.per_layer = [{} for _ in item.frames]
        key = abx_fastabx.file_key(item.utterance.path, self.split.root, self.split.extension)
        for layer, array in zip(self.per_layer, item.frames):
            layer[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def add_layer_abx(layers: Sequence, collector: LayerFrameCollector, item_path: str) -> None:
    """Sets ``abx_within`` / ``abx_across`` (%) on each LayerResult from the collected frames of its layer."""
    if len(collector.per_layer) != len(layers):
        raise AbxInputError(f"{collector.split.manifest_path}: frames of {len(collector.per_layer)} layers were "
                            f"collected for {len(layers)} layers; no utterance was encoded?")
    for layer, scores in zip(layers, layer_scores_from_frames(collector.per_layer, collector.split, item_path)):
        layer.abx_within, layer.abx_across = scores["within"], scores["across"]
