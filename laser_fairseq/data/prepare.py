"""Manifests and transcripts for LibriSpeech (or any folder of wav/flac files), every file checked first.

Output in ``dest`` (fairseq's formats, as ``wav2vec_manifest.py`` and ``libri_labels.py`` write them):

- ``train.tsv`` / ``valid.tsv``: the absolute root, then ``relative/path<TAB>num_samples`` in sorted order;
- ``train.wrd`` / ``train.ltr`` (and valid): one transcript line per audio line, words and letters
  (``H E L L O | W O R L D |``); only when the corpus has LibriSpeech ``*.trans.txt`` files;
- one named split per evaluation subset (``eval_subsets``, e.g. ``dev-other`` -> ``dev_other.tsv`` /
  ``.wrd`` / ``.ltr``, the names fairseq's CTC recipes use as ``valid_subset``), every file of the subset;
- ``dict.ltr.txt``: fairseq dictionary of the letters over train and valid (``symbol count``, most frequent
  first; the evaluation splits are left out, as a dictionary is fixed before evaluation);
- ``rejected.tsv``: ``path<TAB>reason`` of every file left out (unreadable, wrong rate, stereo, empty,
  non-finite, all silent, too short, no transcript).

Every output is written to a temporary file first and renamed only when all of them are complete.
"""

import glob
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..files import write_texts
from .audio import AudioError, audio_problem, load_samples
from .frames import FRAME_WINDOW
from .workers import clean_worker_context

# The laser task's default min_sample_size (0.5 s at 16 kHz): shorter files would be left out of training
# anyway. The hard floor is the CNN front end's receptive field, 400 samples (25 ms) for HuBERT and WavLM.
DEFAULT_MIN_SAMPLES = 8_000

MANIFEST_NAMES = ("train.tsv", "valid.tsv")
REJECTED_NAME = "rejected.tsv"
# LibriSpeech's evaluation subsets: their outputs are always counted as this module's (refused without
# --force, removed when stale), whichever --eval-subsets a run names.
LIBRISPEECH_EVAL_SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other")


class PrepareError(ValueError):
    """The corpus or the destination cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Utterance:
    relative_path: str
    num_samples: int
    words: Optional[str]  # None when the corpus has no transcripts


@dataclass(frozen=True)
class Rejection:
    path: str
    reason: str


@dataclass
class PrepareResult:
    train: List[Utterance]
    valid: List[Utterance]
    rejected: List[Rejection]
    has_transcripts: bool
    written: List[str] = field(default_factory=list)
    evaluation: Dict[str, List[Utterance]] = field(default_factory=dict)  # split name -> its utterances


@dataclass(frozen=True)
class _Check:
    """What one worker needs to check a file."""

    sample_rate: int
    min_samples: int

    def __call__(self, path: str) -> Tuple[int, str]:
        return check_audio_file(path, self.sample_rate, self.min_samples)


def check_audio_file(path: str, sample_rate: int, min_samples: int) -> Tuple[int, str]:
    """(number of samples, "") for a usable file, (0 or its length, reason) otherwise."""
    try:
        samples, file_rate = load_samples(path)
    except AudioError as error:
        return 0, str(error)
    problem = audio_problem(samples, file_rate, sample_rate)
    if problem:
        return samples.shape[0], problem
    if samples.shape[0] < min_samples:
        return samples.shape[0], (
            f"too short: {samples.shape[0]} samples, fewer than --min-samples {min_samples}"
        )
    return samples.shape[0], ""


def find_audio_files(root: str, subsets: Sequence[str], extensions: Sequence[str]) -> List[str]:
    """Paths relative to ``root`` of every audio file under the subsets (or under root), sorted."""
    tops = [os.path.join(root, subset) for subset in subsets] or [root]
    for top in tops:
        if not os.path.isdir(top):
            raise PrepareError(f"{top}: no such folder; check LIBRISPEECH_ROOT and --subsets")
    suffixes = tuple(f".{ext.lstrip('.').lower()}" for ext in extensions)
    found = []
    for top in tops:
        for folder, _, files in os.walk(top):
            found.extend(
                os.path.relpath(os.path.join(folder, name), root)
                for name in files
                if name.lower().endswith(suffixes)
            )
    return sorted(found)


def has_librispeech_transcripts(root: str, subsets: Sequence[str]) -> bool:
    """True for a LibriSpeech layout: --subsets given, or ``*.trans.txt`` files somewhere under root."""
    if subsets:
        return True
    return any(name.endswith(".trans.txt") for _, _, files in os.walk(root) for name in files)


def read_transcripts(folder: str) -> Dict[str, str]:
    """Utterance id -> upper-case words from the ``*.trans.txt`` files of one chapter folder."""
    transcripts = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.trans.txt"))):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                utterance_id, _, words = line.strip().partition(" ")
                if utterance_id:
                    transcripts[utterance_id] = " ".join(words.split()).upper()
    return transcripts


def transcript_problem(relative_path: str, root: str, cache: Dict[str, Dict[str, str]]) -> Tuple[str, str]:
    """(words, "") for a LibriSpeech file, or ("", reason) when its transcript is missing or empty."""
    folder = os.path.dirname(os.path.join(root, relative_path))
    if folder not in cache:
        cache[folder] = read_transcripts(folder)
    utterance_id = os.path.splitext(os.path.basename(relative_path))[0]
    if not cache[folder]:
        return "", f"no transcript: {folder} holds no *.trans.txt file (LibriSpeech layout expected)"
    if utterance_id not in cache[folder]:
        return "", f"no transcript: no line for {utterance_id} in the *.trans.txt file of {folder}"
    words = cache[folder][utterance_id]
    if not words:
        return "", f"empty transcript for {utterance_id} in the *.trans.txt file of {folder}"
    return words, ""


def letters(words: str) -> str:
    """fairseq letter targets: ``HI YOU`` -> ``H I | Y O U |`` (as libri_labels.py writes them)."""
    return " ".join(words.replace(" ", "|")) + " |"


def letter_dictionary(ltr_lines: Iterable[str]) -> str:
    """fairseq ``dict.ltr.txt`` text: ``symbol count`` lines, most frequent first, ties by symbol."""
    counts = Counter(symbol for line in ltr_lines for symbol in line.split())
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return "".join(f"{symbol} {count}\n" for symbol, count in ordered)


def split_train_valid(
    utterances: List[Utterance], valid_percent: float, seed: int
) -> Tuple[List[Utterance], List[Utterance]]:
    """A seeded random ``valid_percent`` fraction (0..1, as fairseq's --valid-percent) goes to valid.

    Both parts keep the input (sorted) order, so the split only depends on the file list and the seed.
    """
    if not 0.0 <= valid_percent < 1.0:
        raise PrepareError(f"--valid-percent must be a fraction in [0, 1), got {valid_percent}")
    count = int(round(len(utterances) * valid_percent))
    if valid_percent > 0 and count == 0 and len(utterances) > 1:
        count = 1
    chosen = set(np.random.default_rng(seed).permutation(len(utterances))[:count].tolist())
    train = [u for i, u in enumerate(utterances) if i not in chosen]
    valid = [u for i, u in enumerate(utterances) if i in chosen]
    return train, valid


def manifest_text(root: str, utterances: Sequence[Utterance]) -> str:
    lines = [root] + [f"{u.relative_path}\t{u.num_samples}" for u in utterances]
    return "\n".join(lines) + "\n"


def split_name(subset: str) -> str:
    """The split (file stem) of an evaluation subset: ``dev-other`` -> ``dev_other``, as fairseq's recipes."""
    return subset.strip("/").replace("-", "_")


def output_texts(root: str, result: PrepareResult) -> Dict[str, str]:
    """File name -> content of every output (manifests, transcripts, dictionary, rejections)."""
    texts = {"train.tsv": manifest_text(root, result.train), REJECTED_NAME: rejected_text(result.rejected)}
    splits = {"train": result.train}
    if result.valid:
        texts["valid.tsv"] = manifest_text(root, result.valid)
        splits["valid"] = result.valid
    for split, utterances in result.evaluation.items():
        texts[f"{split}.tsv"] = manifest_text(root, utterances)
    if result.has_transcripts:
        all_letters = []
        for split, utterances in list(splits.items()) + list(result.evaluation.items()):
            ltr = [letters(u.words) for u in utterances]
            texts[f"{split}.wrd"] = "".join(f"{u.words}\n" for u in utterances)
            texts[f"{split}.ltr"] = "".join(f"{line}\n" for line in ltr)
            if split in splits:
                all_letters.extend(ltr)
        texts["dict.ltr.txt"] = letter_dictionary(all_letters)
    return texts


def rejected_text(rejected: Sequence[Rejection]) -> str:
    return "path\treason\n" + "".join(f"{r.path}\t{_one_line(r.reason)}\n" for r in rejected)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def all_output_names(eval_subsets: Sequence[str] = ()) -> List[str]:
    """Every file name this module may write into ``dest`` (LibriSpeech's evaluation splits included)."""
    names = list(MANIFEST_NAMES) + [REJECTED_NAME, "dict.ltr.txt"]
    names += [f"{split}.{ext}" for split in ("train", "valid") for ext in ("wrd", "ltr")]
    evaluation = dict.fromkeys(split_name(s) for s in list(LIBRISPEECH_EVAL_SUBSETS) + list(eval_subsets))
    return names + [f"{split}.{ext}" for split in evaluation for ext in ("tsv", "wrd", "ltr")]


def refuse_to_overwrite(dest: str, force: bool, eval_subsets: Sequence[str] = ()):
    """PrepareError if ``dest`` already holds outputs and ``force`` is off."""
    existing = [name for name in all_output_names(eval_subsets) if os.path.exists(os.path.join(dest, name))]
    if existing and not force:
        raise PrepareError(
            f"{dest} already holds {', '.join(existing)}; pass --force to replace them (or choose another --dest)"
        )


def write_atomically(dest: str, texts: Dict[str, str], eval_subsets: Sequence[str] = ()) -> List[str]:
    """Write every text beside its name in ``dest``, then rename them all into place (``files.write_texts``);
    stale outputs not in ``texts`` go after. Returns the written paths. A failed write leaves ``dest`` as it was.
    """
    os.makedirs(dest, exist_ok=True)
    written = write_texts({os.path.join(dest, name): text for name, text in texts.items()})
    for name in all_output_names(eval_subsets):
        stale = os.path.join(dest, name)
        if name not in texts and os.path.exists(stale):
            os.remove(stale)
    return written


def _map_files(check: _Check, paths: List[str], workers: int) -> Iterable[Tuple[int, str]]:
    """``check`` of each path, in order, on ``workers`` processes (in this process for 1)."""
    if workers <= 1:
        return map(check, paths)
    pool = clean_worker_context(__name__).Pool(workers)
    return _closing_pool(pool, pool.imap(check, paths, chunksize=16))


def _closing_pool(pool, results):
    try:
        yield from results
    finally:
        pool.terminate()
        pool.join()


def log_to_stderr(message: str):
    print(message, file=sys.stderr, flush=True)


def progress_line(done: int, total: int, rejected: int) -> str:
    percent = 100.0 * done / total if total else 100.0
    return f"checked {done}/{total} files ({percent:.1f}%), {rejected} rejected"


def check_corpus(
    root: str,
    relative_paths: List[str],
    with_transcripts: bool,
    sample_rate: int,
    min_samples: int,
    workers: int,
    progress_every: int,
    log: Callable[[str], None] = log_to_stderr,
) -> Tuple[List[Utterance], List[Rejection]]:
    """Check every file (audio, then transcript); accepted utterances in input order and the rejections.

    Each rejection and a progress line every ``progress_every`` files go to ``log``.
    """
    check = _Check(sample_rate=sample_rate, min_samples=min_samples)
    absolute = [os.path.join(root, path) for path in relative_paths]
    accepted, rejected, transcripts = [], [], {}
    total = len(relative_paths)
    for done, (relative, (num_samples, problem)) in enumerate(
        zip(relative_paths, _map_files(check, absolute, workers)), start=1
    ):
        words = None
        if not problem and with_transcripts:
            words, problem = transcript_problem(relative, root, transcripts)
        if problem:
            rejected.append(Rejection(path=os.path.join(root, relative), reason=_one_line(problem)))
            log(f"rejected {rejected[-1].path}: {rejected[-1].reason}")
        else:
            accepted.append(Utterance(relative_path=relative, num_samples=num_samples, words=words))
        if done % progress_every == 0 or done == total:
            log(progress_line(done, total, len(rejected)))
    warn_about_transcripts_without_audio(transcripts, relative_paths, log)
    return accepted, rejected


def warn_about_transcripts_without_audio(
    transcripts: Dict[str, Dict[str, str]], relative_paths: Sequence[str], log: Callable[[str], None]
):
    """A transcript line whose audio file is missing hints at an incomplete download or extraction."""
    stems = {os.path.splitext(os.path.basename(path))[0] for path in relative_paths}
    orphans = sorted(
        (utterance_id, folder)
        for folder, lines in transcripts.items()
        for utterance_id in lines
        if utterance_id not in stems
    )
    if orphans:
        utterance_id, folder = orphans[0]
        log(
            f"warning: {len(orphans)} transcript line(s) have no audio file, e.g. {utterance_id} in {folder}; "
            f"is the corpus completely extracted?"
        )


def check_eval_subsets(subsets: Sequence[str], eval_subsets: Sequence[str]):
    """PrepareError for evaluation subsets that cannot be named splits beside train and valid."""
    if not eval_subsets:
        return
    if not subsets:
        raise PrepareError(
            "--eval-subsets needs --subsets: without it every file under the root, the evaluation subsets' "
            "too, would go into train"
        )
    shared = sorted(set(subsets) & set(eval_subsets))
    if shared:
        raise PrepareError(f"{', '.join(shared)} given in both --subsets and --eval-subsets; a subset is "
                           f"either trained on or evaluated on")
    names = [split_name(subset) for subset in eval_subsets]
    for subset, name in zip(eval_subsets, names):
        if name in ("train", "valid") or not name or "/" in name or names.count(name) > 1:
            raise PrepareError(f"--eval-subsets {subset}: its split name {name!r} clashes with train, valid "
                               f"or another evaluation subset, or is not a plain folder name")


def under(relative_path: str, subset: str) -> bool:
    """True when ``relative_path`` (relative to the root) lies in the subset folder."""
    return relative_path.startswith(os.path.normpath(subset) + os.sep)


def prepare(
    root: str,
    dest: str,
    subsets: Sequence[str] = (),
    valid_percent: float = 0.01,
    seed: int = 1,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    extensions: Sequence[str] = ("flac",),
    force: bool = False,
    workers: int = 1,
    sample_rate: int = 16_000,
    progress_every: int = 1000,
    log: Callable[[str], None] = log_to_stderr,
    eval_subsets: Sequence[str] = (),
) -> PrepareResult:
    """Check the corpus under ``root`` and write manifests (+ transcripts) into ``dest``; see the module doc.

    ``subsets`` go into train and valid; every ``eval_subsets`` folder becomes a split of its own, whole.
    """
    root = os.path.abspath(root)
    if min_samples < FRAME_WINDOW:
        raise PrepareError(
            f"--min-samples {min_samples} is below the CNN front end's receptive field "
            f"({FRAME_WINDOW} samples): such files would give no frame at all"
        )
    check_eval_subsets(subsets, eval_subsets)
    refuse_to_overwrite(dest, force, eval_subsets)
    relative_paths = find_audio_files(root, subsets, extensions)
    if not relative_paths:
        raise PrepareError(f"{root}: no *.{'/*.'.join(extensions)} files found; check the path and --ext")
    eval_paths = {subset: find_audio_files(root, [subset], extensions) for subset in eval_subsets}
    for subset, paths in eval_paths.items():
        if not paths:
            raise PrepareError(f"{os.path.join(root, subset)}: no *.{'/*.'.join(extensions)} files found; "
                               f"check --eval-subsets and --ext")
    with_transcripts = has_librispeech_transcripts(root, subsets)
    if not with_transcripts:
        log(f"{root}: no LibriSpeech *.trans.txt files: writing manifests only, no .wrd/.ltr transcripts")
    every_path = relative_paths + [path for paths in eval_paths.values() for path in paths]
    log(f"checking {len(every_path)} audio files under {root}")
    accepted, rejected = check_corpus(
        root, every_path, with_transcripts, sample_rate, min_samples, workers, progress_every, log
    )
    by_subset = {subset: [u for u in accepted if under(u.relative_path, subset)] for subset in eval_subsets}
    evaluation = {split_name(subset): utterances for subset, utterances in by_subset.items()}
    held_out = {id(u) for utterances in by_subset.values() for u in utterances}
    accepted = [u for u in accepted if id(u) not in held_out]
    if not accepted:
        first = rejected[0]  # a training file: check_corpus keeps the order of every_path, training files first
        raise PrepareError(
            f"{root}: all {len(relative_paths)} files were rejected, nothing written; first reason: "
            f"{first.path}: {first.reason}"
        )
    for subset, utterances in by_subset.items():
        if not utterances:
            raise PrepareError(f"{os.path.join(root, subset)}: all {len(eval_paths[subset])} files were rejected, "
                               f"nothing written; see the rejections above")
    train, valid = split_train_valid(accepted, valid_percent, seed)
    result = PrepareResult(train=train, valid=valid, rejected=rejected, has_transcripts=with_transcripts,
                           evaluation=evaluation)
    result.written = write_atomically(dest, output_texts(root, result), eval_subsets)
    return result
