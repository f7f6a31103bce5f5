"""The run's own copy of the corpus manifests, with absolute audio roots.

fairseq's ``hubert_pretraining`` task resolves a manifest's root line against the working directory, while
corpora here keep roots relative to the manifest's folder. The driver therefore writes ``RUN/data/``: every
used split's manifest with its root made absolute, plus the side files beside it (``.phn`` frame phones,
``.voice``, ``.sent``, ``.wrd``, ``.ltr``) and ``dict.*.txt``, unchanged. The analysis reads this folder too,
so probes that train on ``train.tsv`` find it beside the analysed manifest.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, List

from ..data.manifest import absolute_manifest_text, read_manifest
from ..files import sha256_of, write_text

REQUIRED_SPLITS = ("train", "valid")
SIDE_EXTENSIONS = ("phn", "voice", "sent", "wrd", "ltr")


class DataError(ValueError):
    """A corpus folder the driver cannot use; the message names the file and what to do."""


def used_splits(analysis_split: str) -> List[str]:
    return list(dict.fromkeys([*REQUIRED_SPLITS, analysis_split]))


def source_files(data_dir: str, splits: Iterable[str]) -> List[str]:
    """The files to copy (names relative to ``data_dir``): manifests, their side files, dictionaries."""
    names = []
    for split in splits:
        manifest = f"{split}.tsv"
        if not os.path.isfile(os.path.join(data_dir, manifest)):
            if split in REQUIRED_SPLITS:
                raise DataError(f"{os.path.join(data_dir, manifest)}: not found; --data must hold train.tsv and "
                                f"valid.tsv (fairseq manifests)")
            raise DataError(f"{os.path.join(data_dir, manifest)}: not found; the schedule's analysis.split is "
                            f"{split!r}")
        names.append(manifest)
        names += [f"{split}.{ext}" for ext in SIDE_EXTENSIONS if os.path.isfile(os.path.join(data_dir, f"{split}.{ext}"))]
    names += sorted(name for name in os.listdir(data_dir) if name.startswith("dict.") and name.endswith(".txt"))
    return names


def file_digests(data_dir: str, names: Iterable[str]) -> Dict[str, str]:
    """sha256 of every source file: the data stage's settings (a changed corpus is detected)."""
    return {name: sha256_of(os.path.join(data_dir, name)) for name in names}


def write_run_data(data_dir: str, names: Iterable[str], out_dir: str) -> List[str]:
    """Check every manifest, write the copies into ``out_dir``; returns the names written."""
    written = []
    for name in names:
        source = os.path.join(data_dir, name)
        if name.endswith(".tsv"):
            manifest = read_manifest(source)
            text = absolute_manifest_text(manifest)
            _check_side_files(data_dir, name, len(manifest))
        else:
            with open(source, encoding="utf-8") as handle:
                text = handle.read()
        write_text(os.path.join(out_dir, name), text)
        written.append(name)
    return written


def _check_side_files(data_dir: str, manifest_name: str, count: int):
    split = manifest_name[: -len(".tsv")]
    for ext in SIDE_EXTENSIONS:
        path = os.path.join(data_dir, f"{split}.{ext}")
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().rstrip("\n").split("\n")
        if len(lines) != count:
            raise DataError(f"{path}: {len(lines)} lines, {manifest_name} has {count} audio lines; side files need "
                            f"one line per audio line")
