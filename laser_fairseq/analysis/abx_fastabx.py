"""The thin layer over fastabx (https://pypi.org/project/fastabx/): item files and the ZeroSpeech 2021 triphone
ABX task, scored by fastabx's own ``Dataset`` / ``Task`` / ``Subsampler`` / ``Score``.

Nothing of the ABX computation is written here: fastabx builds the cells, subsamples them, aligns A, B and X
with DTW under the angular distance and averages the cell scores. The settings are those of
``fastabx.zerospeech_abx`` (ZeroSpeech 2021): ``#phone`` discriminated within the same phone context
(``prev-phone``, ``next-phone``), within or across ``speaker``; at most 10 A, B or X per cell, at most 5 X
speakers per (A, B) across speakers, subsampling seed 0; the cells collapsed over contexts, then speakers.
tests/test_abx.py checks that ``triphone_abx`` returns exactly what ``fastabx.zerospeech_abx`` returns for the
same item file and features.

Item file (ZeroSpeech's format, space-separated, one header line)::

    #file onset offset #phone prev-phone next-phone speaker
    test/v01/s0201 0.14 0.22 ae k t v01

``#file`` is the audio file's path relative to the audio root without its extension; ``onset`` / ``offset`` in
seconds. fastabx slices features at 50 Hz as frames ``ceil(onset * 50 - 0.5) .. floor(offset * 50 - 0.5)``;
a phone labelled on frames ``a .. b`` is written with onset ``0.02 a`` and offset ``0.02 (b + 1)`` (the start
and the end of its frames' 20 ms hops), so fastabx takes exactly the frames labelled with the phone.
"""

from __future__ import annotations

import os

# fastabx 0.9.0's across-speaker subsampling (polars group_by / shuffle / join) picks different X sets from run
# to run when polars runs multi-threaded (polars 2.1.0): the across-voice error of the same features moved by
# ~2 points between calls. With one polars thread it is reproducible. polars reads this when first imported.
os.environ.setdefault("POLARS_MAX_THREADS", "1")

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Sequence

import numpy as np
import torch

FREQUENCY = 50  # Hz: HuBERT / WavLM frames, and the frame phone labels
FRAME_SECONDS = Decimal(1) / Decimal(FREQUENCY)
ITEM_COLUMNS = ("#file", "onset", "offset", "#phone", "prev-phone", "next-phone", "speaker")

# fastabx.zerospeech_abx's ZeroSpeech 2021 settings
MAX_SIZE_GROUP = 10
MAX_X_ACROSS = 5
DISTANCE = "angular"
SEED = 0
BY_CONTEXT = ["prev-phone", "next-phone"]
LEVELS = [("next-phone", "prev-phone"), "speaker"]
MODES = ("within", "across")


@dataclass(frozen=True)
class Item:
    file: str  # audio path relative to the audio root, without extension
    first_frame: int
    last_frame: int  # inclusive
    phone: str
    prev_phone: str
    next_phone: str
    speaker: str

    @property
    def onset(self) -> Decimal:
        return self.first_frame * FRAME_SECONDS

    @property
    def offset(self) -> Decimal:
        return (self.last_frame + 1) * FRAME_SECONDS


def phone_segments(labels: Sequence[int]) -> List[tuple]:
    """(label, first frame, last frame) of each run of equal frame labels, in order."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        return []
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    ends = np.r_[starts[1:] - 1, len(labels) - 1]
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def triphone_items(file: str, labels: Sequence[int], symbols: Sequence[str], speaker: str,
                   silence: str = "sil") -> List[Item]:
    """The triphone items of one utterance: every phone run with a neighbour on both sides; silence is never
    an item, but may be a context."""
    segments = phone_segments(labels)
    items = []
    for (prev, _, _), (phone, first, last), (nxt, _, _) in zip(segments, segments[1:], segments[2:]):
        if symbols[phone] == silence:
            continue
        items.append(Item(file, first, last, symbols[phone], symbols[prev], symbols[nxt], speaker))
    return items


def write_item_file(path: str, items: Iterable[Item]):
    """ZeroSpeech item file (see the module docstring)."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(" ".join(ITEM_COLUMNS) + "\n")
        for item in items:
            handle.write(
                f"{item.file} {item.onset} {item.offset} {item.phone} {item.prev_phone} {item.next_phone} "
                f"{item.speaker}\n"
            )


def file_key(path, root: str, extension: str) -> str:
    """``root/a/b.flac`` -> ``a/b``: how fastabx names a feature file (and an item file's ``#file``)."""
    return Path(path).relative_to(root).as_posix().removesuffix(extension)


def dataset_from_features(item_path: str, root: str, extension: str, features: Mapping[str, torch.Tensor],
                          device: str = "cpu"):
    """fastabx's ``Dataset.from_item`` over the audio files of ``root`` (``#file`` names them), with features
    computed beforehand: ``features[#file]`` is the (T, C) tensor of that file at 50 Hz."""
    from fastabx import Dataset

    return Dataset.from_item(
        item_path, root, FREQUENCY, feature_maker=lambda path: features[file_key(path, root, extension)],
        extension=extension, device=device, progress=False,
    )


def triphone_abx(dataset) -> Dict[str, float]:
    """{"within": error, "across": error}: the ZeroSpeech 2021 triphone ABX error rates (fractions, chance
    0.5) of a fastabx ``Dataset`` read from an item file with the ZeroSpeech columns."""
    from fastabx import Score, Subsampler, Task

    within = Task(dataset, on="#phone", by=[*BY_CONTEXT, "speaker"],
                  subsampler=Subsampler(MAX_SIZE_GROUP, None, SEED))
    across = Task(dataset, on="#phone", by=list(BY_CONTEXT), across=["speaker"],
                  subsampler=Subsampler(MAX_SIZE_GROUP, MAX_X_ACROSS, SEED))
    return {
        mode: Score(task, DISTANCE, progress=False).collapse(levels=LEVELS)
        for mode, task in (("within", within), ("across", across))
    }


def polars_threads() -> int:
    """Threads of polars' pool; 1 for reproducible subsampling (see POLARS_MAX_THREADS above)."""
    import polars

    return polars.thread_pool_size()


def fastabx_version() -> str:
    from importlib.metadata import version

    return version("fastabx")


def item_counts(items: Sequence[Item]) -> Dict[str, int]:
    return {
        "items": len(items),
        "phones": len({item.phone for item in items}),
        "contexts": len({(item.prev_phone, item.next_phone) for item in items}),
        "speakers": len({item.speaker for item in items}),
        "files": len({item.file for item in items}),
    }
