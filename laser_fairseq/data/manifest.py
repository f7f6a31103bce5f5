"""fairseq audio manifests (tsv): a root directory line, then ``relative/path<TAB>num_samples`` per file.

A relative root is resolved against the manifest's own folder (fairseq resolves it against the working
directory; an absolute root, as ``wav2vec_manifest.py`` writes, behaves identically in both), so a corpus
with its manifests can be moved or cloned anywhere.
"""

import os
from dataclasses import dataclass
from typing import List


class ManifestError(ValueError):
    """A manifest that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class ManifestEntry:
    path: str  # absolute path of the audio file
    num_samples: int
    line: int  # 1-based line number in the manifest


@dataclass(frozen=True)
class Manifest:
    path: str
    root: str
    entries: List[ManifestEntry]

    def __len__(self) -> int:
        return len(self.entries)


def read_manifest(path: str, check_files: bool = True) -> Manifest:
    """Parse and validate a manifest; raises ManifestError naming ``path:line`` and what to do."""
    if not os.path.isfile(path):
        raise ManifestError(
            f"{path}: manifest not found. Write one with scripts/prepare_librispeech.py or "
            f"fairseq's examples/wav2vec/wav2vec_manifest.py."
        )
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    if not lines or not lines[0].strip():
        raise ManifestError(f"{path}:1: the first line must be the audio root directory, found nothing")
    root = _resolve_root(path, lines[0].strip())
    if check_files and not os.path.isdir(root):
        raise ManifestError(
            f"{path}:1: the audio root {root} is not a directory; fix the root line (a relative root is "
            f"taken from the manifest's folder) or regenerate the manifest"
        )
    entries, problems = [], []
    for number, text in enumerate(lines[1:], start=2):
        if not text.strip():
            continue
        try:
            entries.append(_parse_line(path, number, text, root, check_files))
        except ManifestError as problem:
            problems.append(str(problem))
    if problems:
        raise ManifestError(summarize_problems(path, problems))
    if not entries:
        raise ManifestError(f"{path}: no audio lines after the root line")
    return Manifest(path=path, root=root, entries=entries)


def summarize_problems(path: str, problems: List[str], shown: int = 5) -> str:
    """One message for every bad line: the first ``shown`` in full, then how many more."""
    if len(problems) == 1:
        return problems[0]
    more = f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else ""
    return f"{path}: {len(problems)} bad lines:\n  " + "\n  ".join(problems[:shown]) + more


def _resolve_root(manifest_path: str, root: str) -> str:
    if os.path.isabs(root):
        return root
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(manifest_path)), root))


def _parse_line(manifest_path: str, number: int, text: str, root: str, check_files: bool) -> ManifestEntry:
    where = f"{manifest_path}:{number}"
    fields = text.split("\t")
    if len(fields) != 2:
        raise ManifestError(
            f"{where}: expected 'relative/path<TAB>num_samples', got {len(fields)} tab-separated "
            f"field(s): {text[:120]!r}"
        )
    relative, samples_text = fields
    try:
        num_samples = int(samples_text)
    except ValueError:
        raise ManifestError(f"{where}: num_samples must be an integer, got {samples_text!r}") from None
    if num_samples <= 0:
        raise ManifestError(f"{where}: num_samples must be positive, got {num_samples}")
    audio_path = os.path.join(root, relative)
    if check_files and not os.path.isfile(audio_path):
        raise ManifestError(
            f"{where}: audio file {audio_path} does not exist (root line is {root!r}); fix the path or "
            f"regenerate the manifest"
        )
    return ManifestEntry(path=audio_path, num_samples=num_samples, line=number)
