"""Frame phone labels of a manifest, and the labelled utterances the phone probe trains and is scored on.

The format (shared with the corpus generator and ``scripts/alignments_to_frame_labels.py``):

- ``<manifest stem>.phn`` (``valid.tsv`` -> ``valid.phn``): one line per audio line of the manifest,
  space-separated phone symbols, **one per upstream frame**: T = (S - 400) // 320 + 1 frames for S samples
  at 16 kHz; frame t covers samples [320 t, 320 t + 400) and carries the phone at sample 320 t + 200.
- ``dict.phn.txt`` beside it: the phone inventory in fairseq's Dictionary format, ``symbol count`` per line.
- silence is the symbol ``sil``.

Labels are checked against the manifest (line count, frame count from the sample count, symbols in the
dictionary) and every problem is reported with the file and line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..data.audio import SAMPLE_RATE
from ..data.frames import SILENCE, frame_centre, frame_count
from ..data.manifest import Manifest, read_manifest, summarize_problems
from .utterances import Utterance, UtteranceSet, load_utterances, side_file_path

LABELS_EXTENSION = "phn"
DICT_NAME = "dict.phn.txt"
SELECTION_EVERY = 5  # every 5th training group (sentence, else utterance) chooses the probe's shrinkage


class FrameLabelError(ValueError):
    """Frame labels that cannot be used; the message names the file, the line and what to do."""


def frame_label_times(num_frames: int) -> np.ndarray:
    """(T,) time in seconds at which each frame takes its label (``frames.frame_centre``)."""
    return frame_centre(np.arange(num_frames)) / SAMPLE_RATE


# ------------------------------------------------------------------------------------------ dictionary


def read_phone_dict(path: str) -> List[str]:
    """The symbols of a ``symbol count`` dictionary, in file order."""
    if not os.path.isfile(path):
        raise FrameLabelError(
            f"{path}: phone dictionary not found; it belongs beside the .phn files "
            f"(scripts/alignments_to_frame_labels.py writes it) or pass --phone-dict FILE"
        )
    symbols, problems, seen = [], [], {}
    with open(path, encoding="utf-8") as handle:
        for number, text in enumerate(handle, start=1):
            fields = text.split()
            if not fields:
                continue
            if len(fields) < 2 or not fields[1].lstrip("-").isdigit():
                problems.append(f"{path}:{number}: expected 'symbol count', got {text.strip()[:80]!r}")
            elif fields[0] in seen:
                problems.append(f"{path}:{number}: symbol {fields[0]!r} already on line {seen[fields[0]]}")
            else:
                seen[fields[0]] = number
                symbols.append(fields[0])
    if problems:
        raise FrameLabelError(summarize_problems(path, problems))
    if not symbols:
        raise FrameLabelError(f"{path}: the phone dictionary is empty")
    return symbols


def format_phone_dict(counts: Dict[str, int]) -> str:
    """``symbol count`` lines, most frequent first (fairseq's order), ties by symbol."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return "".join(f"{symbol} {count}\n" for symbol, count in ordered)


# -------------------------------------------------------------------------------------- label files


def read_frame_labels(
    path: str, manifest: Manifest, symbols: Sequence[str], dict_path: str, indices: Sequence[int]
) -> List[np.ndarray]:
    """The frame labels of the audio lines ``indices`` (0-based) as (T,) int arrays into ``symbols``.

    The whole file must have one non-blank line per audio line; the selected lines must have exactly the
    manifest's frame count and only dictionary symbols. Every problem is reported at once.
    """
    if not os.path.isfile(path):
        raise FrameLabelError(f"{path}: frame label file not found")
    wanted = {index: position for position, index in enumerate(indices)}
    index_of = {symbol: i for i, symbol in enumerate(symbols)}
    labels: List[Optional[np.ndarray]] = [None] * len(indices)
    problems = []
    count = 0
    with open(path, encoding="utf-8") as handle:
        for count, text in enumerate(handle, start=1):
            fields = text.split()
            if not fields:
                problems.append(f"{path}:{count}: blank line; every audio line needs its frame labels")
            elif count - 1 in wanted and count <= len(manifest.entries):
                entry = manifest.entries[count - 1]
                problem = _line_problem(fields, entry.num_samples, index_of, dict_path)
                if problem:
                    problems.append(
                        f"{path}:{count} (audio line {manifest.path}:{entry.line}, {entry.num_samples} "
                        f"samples): {problem}"
                    )
                else:
                    labels[wanted[count - 1]] = np.fromiter((index_of[s] for s in fields), np.int32, len(fields))
    if count != len(manifest.entries):
        problems.insert(
            0,
            f"{path}: {count} lines, but {manifest.path} has {len(manifest.entries)} audio lines; the label "
            f"file must have one line per audio line, in the same order",
        )
    if problems:
        raise FrameLabelError(summarize_problems(path, problems))
    return labels


def _line_problem(fields: List[str], num_samples: int, index_of: Dict[str, int], dict_path: str) -> str:
    expected = frame_count(num_samples)
    if len(fields) != expected:
        return (
            f"{len(fields)} frame labels, but the audio has {expected} frames of 20 ms "
            f"((samples - 400) // 320 + 1); make the labels for exactly this audio "
            f"(scripts/alignments_to_frame_labels.py takes the frame grid from the manifest)"
        )
    unknown = sorted({symbol for symbol in fields if symbol not in index_of})
    if unknown:
        return f"symbol(s) {', '.join(map(repr, unknown[:5]))} not in {dict_path}"
    return ""


def check_frame_count(labels: np.ndarray, frames: int, utterance: Utterance, labels_path: str):
    """FrameLabelError unless the upstream produced exactly as many frames as the utterance has labels."""
    if len(labels) != frames:
        raise FrameLabelError(
            f"{labels_path}:{utterance.index + 1}: {len(labels)} frame labels, but the upstream gives "
            f"{frames} frames for {utterance.path} (manifest line {utterance.line}); is the manifest's sample "
            f"count stale, or does this upstream's CNN differ from HuBERT/WavLM's 400-sample window, 320 hop?"
        )


# ----------------------------------------------------------------------- the probe's labelled utterances


@dataclass(frozen=True)
class LabelledUtterances:
    utterances: List[Utterance]
    labels: List[np.ndarray]  # per utterance, (T_u,) int indices into the phone symbols
    labels_path: str
    manifest_path: str


@dataclass(frozen=True)
class PhoneProbeLabels:
    """What the phone probe trains on (``train``) and is scored on (``test``, the analysed utterances)."""

    symbols: List[str]
    test: LabelledUtterances
    train: LabelledUtterances
    selection: np.ndarray  # (len(train.utterances),) bool: held out to choose the shrinkage
    settings: Dict[str, object] = field(default_factory=dict)

    @property
    def silence(self) -> Optional[int]:
        return self.symbols.index(SILENCE) if SILENCE in self.symbols else None


DEFAULT_PROBE_TRAIN_UTTERANCES = 500


def load_phone_probe_labels(
    utterance_set: UtteranceSet,
    labels_path: Optional[str] = None,
    dict_path: Optional[str] = None,
    train_manifest: Optional[str] = None,
    train_labels_path: Optional[str] = None,
    max_train_utterances: int = DEFAULT_PROBE_TRAIN_UTTERANCES,
) -> Tuple[Optional[PhoneProbeLabels], str]:
    """(labels, "") when the probe can run on these utterances, else (None, why not).

    Defaults: ``<manifest stem>.phn``, ``dict.phn.txt`` beside the manifest, and ``train.tsv`` /
    ``train.phn`` beside it for training. Files given explicitly must exist; missing default files make the
    probe unavailable. Training utterances that share an audio file or a sentence id with the analysed ones
    are left out; of the rest, ``max_train_utterances`` evenly spaced ones are used.
    """
    manifest_path = utterance_set.manifest_path
    folder = os.path.dirname(os.path.abspath(manifest_path))
    default_labels = side_file_path(manifest_path, LABELS_EXTENSION)
    labels_path, reason = _given_or_default(labels_path, default_labels, "--phone-labels")
    if reason:
        return None, f"no frame labels ({reason})"
    dict_path = dict_path or os.path.join(folder, DICT_NAME)
    symbols = read_phone_dict(dict_path)
    default_train = os.path.join(folder, "train.tsv")
    train_manifest, reason = _given_or_default(train_manifest, default_train, "--probe-train-manifest")
    if reason:
        return None, f"no training utterances for the probe ({reason})"
    train_labels_path, reason = _given_or_default(
        train_labels_path, side_file_path(train_manifest, LABELS_EXTENSION), "--probe-train-labels"
    )
    if reason:
        return None, f"no frame labels for the probe's training utterances ({reason})"

    test_manifest = read_manifest(manifest_path)
    test_indices = [u.index for u in utterance_set.utterances]
    test = LabelledUtterances(
        utterance_set.utterances,
        read_frame_labels(labels_path, test_manifest, symbols, dict_path, test_indices),
        labels_path,
        manifest_path,
    )
    candidates = load_utterances(train_manifest).utterances
    kept = without_overlap(candidates, utterance_set.utterances)
    chosen = [kept[i] for i in evenly_spaced(len(kept), max_train_utterances)]
    if len(set(map(_group, chosen))) < 2:
        return None, (
            f"{len(candidates) - len(kept)} of the {len(candidates)} utterances of {train_manifest} share audio "
            f"or a sentence with the analysed ones; the rest has fewer than 2 sentences (the probe is scored on "
            f"held-out sentences and chooses its shrinkage on held-out training sentences): analyse "
            f"another split (e.g. valid.tsv / test.tsv) or pass --probe-train-manifest"
        )
    train_indices = [u.index for u in chosen]
    train = LabelledUtterances(
        chosen,
        read_frame_labels(train_labels_path, read_manifest(train_manifest), symbols, dict_path, train_indices),
        train_labels_path,
        train_manifest,
    )
    selection = selection_mask(chosen)
    settings = {
        "labels": labels_path,
        "dict": dict_path,
        "train_manifest": train_manifest,
        "train_labels": train_labels_path,
        "train_utterances": len(chosen),
        "train_frames": int(sum(len(labels) for labels in train.labels)),
        "selection_utterances": int(selection.sum()),
        "excluded_overlapping": len(candidates) - len(kept),
        "classes": len(symbols),
    }
    return PhoneProbeLabels(symbols, test, train, selection, settings), ""


def _given_or_default(given: Optional[str], default: str, option: str) -> Tuple[str, str]:
    """(path, "") for a given file (which must exist) or an existing default; ("", reason) otherwise."""
    if given is not None:
        if not os.path.isfile(given):
            raise FileNotFoundError(f"{given}: file not found ({option})")
        return given, ""
    if os.path.isfile(default):
        return default, ""
    return "", f"{default} not found; pass {option} FILE"


def without_overlap(candidates: Sequence[Utterance], analysed: Sequence[Utterance]) -> List[Utterance]:
    """The candidates that share neither an audio file nor a sentence id with the analysed utterances."""
    paths = {os.path.realpath(u.path) for u in analysed}
    sentences = {u.sentence for u in analysed if u.sentence is not None}
    return [
        u for u in candidates
        if os.path.realpath(u.path) not in paths and (u.sentence is None or u.sentence not in sentences)
    ]


def _group(utterance: Utterance) -> str:
    """What is held out together: the sentence id when known, else the utterance's audio file."""
    return utterance.sentence if utterance.sentence is not None else utterance.path


def evenly_spaced(count: int, limit: int) -> List[int]:
    """Up to ``limit`` indices spread evenly over ``range(count)`` (all of them when count <= limit)."""
    if count <= limit:
        return list(range(count))
    return sorted(set(np.round(np.linspace(0, count - 1, limit)).astype(int).tolist()))


def selection_mask(utterances: Sequence[Utterance]) -> np.ndarray:
    """(U,) bool: the utterances of every 5th group (sentence id, else the utterance itself) in order of
    first appearance, or of the last group when there are fewer than 5; the rest fit the probe."""
    keys = [_group(u) for u in utterances]
    groups = list(dict.fromkeys(keys))
    chosen = {g for position, g in enumerate(groups) if position % SELECTION_EVERY == SELECTION_EVERY - 1}
    chosen = chosen or {groups[-1]}
    return np.array([key in chosen for key in keys], dtype=bool)
