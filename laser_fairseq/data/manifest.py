"""fairseq audio manifests (tsv): a root directory line, then ``relative/path<TAB>num_samples`` per file.

The root is absolute (what the corpus tools write) or relative to the manifest's own folder (committed corpora
such as ``manifests/demo``), resolved here; ``write_absolute_copies`` makes a relative-root folder one that
fairseq's own tasks read. Why both: docs/synthetic_corpus.md#the-manifests-root-line.
"""

import os
from dataclasses import dataclass
from typing import Dict, List

from ..files import write_texts


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


# ------------------------------------------------------------------------------- absolute copies for fairseq


def absolute_manifest_text(manifest: Manifest) -> str:
    """The manifest with its root as an absolute path and the audio lines as they were."""
    with open(manifest.path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    body = [line for line in lines[1:] if line.strip()]
    return "\n".join([manifest.root, *body]) + "\n"


def is_manifest_file(path: str) -> bool:
    """A ``.tsv`` whose first line has no tab (a root line): other tables (``voices.tsv``, ``rejected.tsv``,
    ``sentences.tsv``) start with a tab-separated header."""
    if not path.endswith(".tsv") or not os.path.isfile(path):
        return False
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    return bool(first.strip()) and "\t" not in first


def absolute_copy_texts(source: str) -> Dict[str, str]:
    """File name -> text of the absolute copy of the folder ``source``: every manifest with its root made
    absolute (each checked: root, files, counts), the side files of their splits (``train.ltr``, ``train.phn``,
    ...) and the ``dict.*.txt`` dictionaries, unchanged."""
    if not os.path.isdir(source):
        raise ManifestError(f"{source}: not a folder; give the folder holding the .tsv manifests")
    names = sorted(os.listdir(source))
    manifests = [name for name in names if is_manifest_file(os.path.join(source, name))]
    if not manifests:
        raise ManifestError(f"{source}: no manifest (a .tsv whose first line is the audio root) found")
    splits = {name[: -len(".tsv")] for name in manifests}
    texts = {name: absolute_manifest_text(read_manifest(os.path.join(source, name))) for name in manifests}
    for name in names:
        path = os.path.join(source, name)
        stem, _, ext = name.partition(".")
        side = stem in splits and ext and name not in texts and not ext.endswith("tsv")
        dictionary = name.startswith("dict.") and name.endswith(".txt")
        if os.path.isfile(path) and (side or dictionary):
            with open(path, encoding="utf-8") as handle:
                texts[name] = handle.read()
    return texts


def write_absolute_copies(source: str, out: str, force: bool = False) -> List[str]:
    """Write ``absolute_copy_texts(source)`` into the folder ``out``; returns the paths written.

    ``out`` must not be ``source`` (the relative manifests stay as they are); files already in ``out`` are
    replaced only with ``force``. Every text is written to a temporary file first and renamed at the end.
    """
    if os.path.realpath(source) == os.path.realpath(out):
        raise ManifestError(f"{out} is the source folder; the copies go to another folder (--out), the "
                            f"relative manifests stay as they are")
    texts = absolute_copy_texts(source)
    existing = sorted(name for name in texts if os.path.exists(os.path.join(out, name)))
    if existing and not force:
        raise ManifestError(f"{out} already holds {', '.join(existing)}; pass --force to replace them "
                            f"(or choose another --out)")
    os.makedirs(out, exist_ok=True)
    return write_texts({os.path.join(out, name): text for name, text in texts.items()})
