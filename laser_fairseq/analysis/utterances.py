"""The utterances to analyse: manifest entries with their voice and sentence ids (when known).

Voice and sentence ids come from side files aligned line by line with the manifest's audio lines: by
default ``<manifest stem>.voice`` and ``<manifest stem>.sent`` next to the manifest (``train.tsv`` ->
``train.voice`` / ``train.sent``), or files given explicitly. When either is missing, the labels are
``None`` and ``labels_missing`` says why; the label-based measures are then reported as not available.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional

from ..data.manifest import read_manifest


@dataclass(frozen=True)
class Utterance:
    index: int  # 0-based position among the manifest's audio lines (seeds this utterance's perturbation)
    path: str
    line: int  # 1-based line in the manifest, for messages
    voice: Optional[str]
    sentence: Optional[str]


@dataclass(frozen=True)
class UtteranceSet:
    manifest_path: str
    utterances: List[Utterance]
    voices_path: Optional[str]
    sentences_path: Optional[str]
    labels_missing: str  # "" when every utterance has a voice and a sentence id, else the reason

    @property
    def has_labels(self) -> bool:
        return not self.labels_missing

    def voices(self) -> List[str]:
        return [u.voice for u in self.utterances]

    def sentences(self) -> List[str]:
        return [u.sentence for u in self.utterances]


def side_file_path(manifest_path: str, extension: str) -> str:
    """``dir/train.tsv`` + ``voice`` -> ``dir/train.voice``."""
    stem, _ = os.path.splitext(manifest_path)
    return f"{stem}.{extension}"


def read_labels(path: str, expected: int, what: str) -> List[str]:
    """One id per line (blank lines at the end ignored); the count must match the manifest's audio lines."""
    with open(path, encoding="utf-8") as handle:
        labels = [line.strip() for line in handle.read().rstrip("\n").split("\n")]
    if len(labels) != expected or any(not label for label in labels):
        raise ValueError(
            f"{path}: expected {expected} non-empty {what} ids (one per audio line of the manifest), found "
            f"{len(labels)} lines{' with blank ones' if any(not label for label in labels) else ''}"
        )
    return labels


def load_utterances(
    manifest_path: str,
    voices_path: Optional[str] = None,
    sentences_path: Optional[str] = None,
    max_utterances: Optional[int] = None,
) -> UtteranceSet:
    """The first ``max_utterances`` audio lines of the manifest (all if None) with their labels.

    Explicitly given label files must exist; the default side files are used only when present.
    """
    manifest = read_manifest(manifest_path)
    count = len(manifest.entries)
    voices_path = _label_file(voices_path, manifest_path, "voice")
    sentences_path = _label_file(sentences_path, manifest_path, "sent")
    voices = read_labels(voices_path, count, "voice") if voices_path else [None] * count
    sentences = read_labels(sentences_path, count, "sentence") if sentences_path else [None] * count
    missing = [
        f"no {what} ids ({side_file_path(manifest_path, extension)} not found; pass --{option} FILE)"
        for path, what, extension, option in (
            (voices_path, "voice", "voice", "voices"),
            (sentences_path, "sentence", "sent", "sentences"),
        )
        if path is None
    ]
    limit = count if max_utterances is None else min(max_utterances, count)
    utterances = [
        Utterance(index, entry.path, entry.line, voices[index], sentences[index])
        for index, entry in enumerate(manifest.entries[:limit])
    ]
    return UtteranceSet(manifest_path, utterances, voices_path, sentences_path, "; ".join(missing))


def _label_file(given: Optional[str], manifest_path: str, extension: str) -> Optional[str]:
    if given is not None:
        if not os.path.isfile(given):
            raise FileNotFoundError(f"{given}: label file not found")
        return given
    default = side_file_path(manifest_path, extension)
    return default if os.path.isfile(default) else None
