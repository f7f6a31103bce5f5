"""A synthetic speech corpus with frame-level phone labels: grammar sentences x espeak-ng voices.

Layout of the output folder (see docs/synthetic_corpus.md for the contract other code relies on):

- ``audio/<sentence_id>_<voice_id>.flac``: 16 kHz mono 16-bit FLAC;
- ``{train,valid,test}.tsv``: root line ``OUT/audio`` as an absolute path (with ``relative_root``: ``audio``,
  relative to the manifest's folder; why: docs/synthetic_corpus.md#the-manifests-root-line), then
  ``<utt>.flac<TAB>num_samples``, sorted by sentence then voice;
- per split, one line per audio line: ``.wrd`` (words), ``.ltr`` (letters), ``.sent`` (sentence id),
  ``.voice`` (voice id), ``.phones`` (espeak's phones, pauses left out), ``.phn`` (one phone per 50 Hz frame);
- ``dict.ltr.txt`` / ``dict.phn.txt`` (fairseq ``symbol count``, over all splits), ``voices.tsv``,
  ``sentences.tsv`` and ``corpus.json`` (settings, versions, counts; nothing time- or path-dependent).

Splits are by sentence (valid/test sentences never occur in train). Everything is written into a temporary
sibling folder that is renamed into place at the end; an existing corpus is only replaced with ``force``.
The same settings give byte-identical folders, whatever the number of worker processes (apart from the
manifests' absolute root line, which names the folder; with ``relative_root`` byte-identical wherever built).
"""

import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import soundfile as sf
import torch
import torchaudio

from . import synthesis
from .audio import SAMPLE_RATE
from .frames import FRAME_HOP, FRAME_WINDOW, SILENCE, frame_count
from .prepare import letter_dictionary, letters
from .sentences import Sentence, SentenceError, draw_sentences
from .synthesis import VOICES, Voice
from .word_lists import GRAMMAR_VERSION
from .workers import clean_worker_context

SPLITS = ("train", "valid", "test")
AUDIO_DIR = "audio"
SIDE_FILES = ("wrd", "ltr", "sent", "voice", "phones", "phn")


class CorpusError(ValueError):
    """Settings or an output folder that cannot be used; the message names the option and what to do."""


@dataclass(frozen=True)
class CorpusSettings:
    sentences: int = 250  # distinct sentences over all splits
    voices: int = 8  # the first ``voices`` entries of synthesis.VOICES
    voices_per_sentence: int = 0  # 0: every sentence in every voice
    valid_sentences: int = 0  # 0: 10% of the sentences, at least 1
    test_sentences: int = 0  # 0: 10% of the sentences, at least 1
    seed: int = 1
    edge_silence_ms: int = 100  # zero samples added before and after every utterance

    def resolved(self) -> "CorpusSettings":
        """The settings with defaults filled in and checked; CorpusError names the bad option."""
        default_held_out = max(1, round(self.sentences / 10))
        settings = CorpusSettings(
            sentences=self.sentences,
            voices=self.voices,
            voices_per_sentence=self.voices_per_sentence or self.voices,
            valid_sentences=self.valid_sentences or default_held_out,
            test_sentences=self.test_sentences or default_held_out,
            seed=self.seed,
            edge_silence_ms=self.edge_silence_ms,
        )
        settings._check()
        return settings

    def _check(self):
        if not 1 <= self.voices <= len(VOICES):
            raise CorpusError(f"--voices must be between 1 and {len(VOICES)} (the voice table), got {self.voices}")
        if not 1 <= self.voices_per_sentence <= self.voices:
            raise CorpusError(
                f"--voices-per-sentence must be between 1 and --voices ({self.voices}), got {self.voices_per_sentence}"
            )
        if self.valid_sentences < 1 or self.test_sentences < 1:
            raise CorpusError(
                f"--valid-sentences and --test-sentences must be at least 1, got {self.valid_sentences} and "
                f"{self.test_sentences}"
            )
        train = self.sentences - self.valid_sentences - self.test_sentences
        if train < 1:
            raise CorpusError(
                f"--valid-sentences {self.valid_sentences} + --test-sentences {self.test_sentences} leave no train "
                f"sentence out of --sentences {self.sentences}; raise --sentences or lower the held-out counts"
            )
        if not 0 <= self.edge_silence_ms <= 2000:
            raise CorpusError(f"--edge-silence-ms must be between 0 and 2000, got {self.edge_silence_ms}")

    @property
    def edge_silence_samples(self) -> int:
        return milliseconds_to_samples(self.edge_silence_ms)


def milliseconds_to_samples(milliseconds: int) -> int:
    """Whole 16 kHz samples in ``milliseconds`` (rounded down)."""
    return milliseconds * SAMPLE_RATE // 1000


@dataclass(frozen=True)
class Job:
    """One utterance to make: a sentence in a voice."""

    split: str
    sentence: Sentence
    voice: Voice
    noise_seed: int

    @property
    def utterance_id(self) -> str:
        return f"{self.sentence.sentence_id}_{self.voice.voice_id}"


@dataclass(frozen=True)
class Record:
    """What the side files say about one written utterance."""

    split: str
    utterance_id: str
    sentence_id: str
    voice_id: str
    words: str
    num_samples: int
    phones: str  # space-separated, pauses left out
    frame_labels: str  # space-separated, one per frame


def split_sentences(settings: CorpusSettings) -> Dict[str, List[Sentence]]:
    """Draw the sentences; the last ``test_sentences`` go to test, the ``valid_sentences`` before them to valid."""
    try:
        sentences = draw_sentences(settings.sentences, settings.seed)
    except SentenceError as error:
        raise CorpusError(f"--sentences {settings.sentences}: {error}") from None
    train_end = settings.sentences - settings.valid_sentences - settings.test_sentences
    valid_end = train_end + settings.valid_sentences
    return {"train": sentences[:train_end], "valid": sentences[train_end:valid_end], "test": sentences[valid_end:]}


def plan_jobs(settings: CorpusSettings) -> List[Job]:
    """Every utterance, sorted by split, sentence and voice. Sentence ``i`` is spoken by voices
    ``i*M .. i*M + M - 1`` (mod V) for M voices per sentence, so every voice gets the same share."""
    voices = VOICES[: settings.voices]
    jobs, index = [], 0
    for split, sentences in split_sentences(settings).items():
        for sentence in sentences:
            first = index * settings.voices_per_sentence
            chosen = sorted({voices[(first + k) % len(voices)] for k in range(settings.voices_per_sentence)},
                            key=lambda voice: voice.voice_id)
            jobs.extend(make_job(split, sentence, voice, settings.seed) for voice in chosen)
            index += 1
    return jobs


def make_job(split: str, sentence: Sentence, voice: Voice, seed: int) -> Job:
    """The job of ``sentence`` in ``voice``; its noise seed is a hash of ``seed`` and the utterance id."""
    key = f"{seed}/{sentence.sentence_id}_{voice.voice_id}".encode()
    return Job(split, sentence, voice, zlib.crc32(key))


@dataclass(frozen=True)
class _MakeUtterance:
    """Synthesise one job, write its FLAC into ``audio_dir`` and return its Record (picklable for a pool)."""

    audio_dir: str
    edge_silence: int

    def __call__(self, job: Job) -> Record:
        utterance = synthesis.to_utterance(synthesis.synthesise_raw(job.sentence.text, job.voice, job.noise_seed),
                                           self.edge_silence)
        path = os.path.join(self.audio_dir, f"{job.utterance_id}.flac")
        sf.write(path, utterance.samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        labels = synthesis.frame_labels(utterance.phone_starts, utterance.phones, utterance.samples.size)
        return Record(
            split=job.split,
            utterance_id=job.utterance_id,
            sentence_id=job.sentence.sentence_id,
            voice_id=job.voice.voice_id,
            words=job.sentence.words,
            num_samples=int(utterance.samples.size),
            phones=" ".join(utterance.spoken),
            frame_labels=" ".join(labels),
        )


def _init_worker():
    torch.set_num_threads(1)  # 2 workers on 2 cores; a single thread also fixes the resampler's reduction order


def _map_jobs(make: _MakeUtterance, jobs: List[Job], workers: int) -> Iterator[Record]:
    """``make`` of every job, in order, on ``workers`` processes (in this process for 1)."""
    if workers <= 1:
        threads = torch.get_num_threads()
        _init_worker()
        try:
            yield from map(make, jobs)
        finally:
            torch.set_num_threads(threads)
        return
    pool = clean_worker_context(__name__).Pool(workers, initializer=_init_worker)
    try:
        yield from pool.imap(make, jobs, chunksize=4)
    finally:
        pool.terminate()
        pool.join()


# ------------------------------------------------------------------------------------------ output texts


def _lines(values: Iterable[str]) -> str:
    return "".join(f"{value}\n" for value in values)


def split_texts(split: str, records: Sequence[Record], root: str = AUDIO_DIR) -> Dict[str, str]:
    """The manifest (root line ``root``) and side files of one split."""
    texts = {f"{split}.tsv": _lines([root] + [f"{r.utterance_id}.flac\t{r.num_samples}" for r in records])}
    columns = {
        "wrd": [r.words for r in records],
        "ltr": [letters(r.words) for r in records],
        "sent": [r.sentence_id for r in records],
        "voice": [r.voice_id for r in records],
        "phones": [r.phones for r in records],
        "phn": [r.frame_labels for r in records],
    }
    texts.update({f"{split}.{suffix}": _lines(columns[suffix]) for suffix in SIDE_FILES})
    return texts


def voices_text(voices: Sequence[Voice]) -> str:
    header = "voice_id\tespeak_voice\tpitch\tpitch_range\trate\tdescription"
    rows = [f"{v.voice_id}\t{v.espeak_name}\t{v.pitch}\t{v.pitch_range}\t{v.rate}\t{v.description}" for v in voices]
    return _lines([header] + rows)


def sentences_text(splits: Dict[str, List[Sentence]]) -> str:
    rows = [f"{s.sentence_id}\t{split}\t{s.text}" for split, sentences in splits.items() for s in sentences]
    return _lines(["sentence_id\tsplit\ttext"] + rows)


def corpus_description(settings: CorpusSettings, by_split: Dict[str, List[Record]], phone_counts: Counter) -> dict:
    """corpus.json: settings, versions and counts (nothing that changes from one run to the next)."""
    counts = {
        split: {
            "utterances": len(records),
            "sentences": len({r.sentence_id for r in records}),
            "voices": len({r.voice_id for r in records}),
            "seconds": round(sum(r.num_samples for r in records) / SAMPLE_RATE, 3),
            "frames": sum(frame_count(r.num_samples) for r in records),
        }
        for split, records in by_split.items()
    }
    return {
        "generator": "scripts/make_synthetic_corpus.py (laser_fairseq.data.synthetic_corpus)",
        "settings": asdict(settings),
        "grammar_version": GRAMMAR_VERSION,
        "versions": {
            "espeakng-loader": metadata.version("espeakng-loader"),
            "libespeak-ng": synthesis.espeak_version(),
            "torchaudio": torchaudio.__version__,
            "libsndfile": sf.__libsndfile_version__,
        },
        "audio": {"sample_rate": SAMPLE_RATE, "format": "FLAC", "subtype": "PCM_16",
                  "synthesiser_sample_rate": synthesis.ESPEAK_SAMPLE_RATE},
        "frames": {"window": FRAME_WINDOW, "hop": FRAME_HOP, "label_rate": SAMPLE_RATE // FRAME_HOP,
                   "count": "floor((samples - 400) / 320) + 1",
                   "label": f"phone covering sample {FRAME_HOP} * t + {FRAME_WINDOW // 2}", "silence": SILENCE},
        "counts": counts,
        "phones": sorted(phone_counts),
    }


def corpus_texts(settings: CorpusSettings, splits: Dict[str, List[Sentence]], records: List[Record],
                 root: str = AUDIO_DIR) -> Dict[str, str]:
    """File name -> content of every text output; ``root`` is the manifests' root line."""
    by_split = {split: [r for r in records if r.split == split] for split in SPLITS}
    texts: Dict[str, str] = {}
    for split in SPLITS:
        texts.update(split_texts(split, by_split[split], root))
    texts["dict.ltr.txt"] = letter_dictionary(letters(r.words) for r in records)
    texts["dict.phn.txt"] = letter_dictionary(r.frame_labels for r in records)
    texts["voices.tsv"] = voices_text(VOICES[: settings.voices])
    texts["sentences.tsv"] = sentences_text(splits)
    phone_counts = Counter(label for r in records for label in r.frame_labels.split())
    description = corpus_description(settings, by_split, phone_counts)
    texts["corpus.json"] = json.dumps(description, indent=2, sort_keys=True) + "\n"
    return texts


# ------------------------------------------------------------------------------------ folder handling


def refuse_to_overwrite(out: str, force: bool):
    """CorpusError when ``out`` exists (as a file, or a non-empty folder) and ``force`` is off."""
    if os.path.isfile(out) or os.path.islink(out):
        raise CorpusError(f"{out} exists and is not a folder; choose another --out")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise CorpusError(f"{out} already exists and is not empty; pass --force to replace it (or choose another --out)")


def _replace_folder(temporary: str, out: str):
    """Move the finished ``temporary`` folder to ``out``, replacing what is there; the old one goes last."""
    if not os.path.exists(out):
        os.rename(temporary, out)
        return
    old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
    os.rename(out, os.path.join(old, "corpus"))
    os.rename(temporary, out)
    shutil.rmtree(old)


def log_to_stderr(message: str):
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BuildResult:
    out: str
    utterances: int
    seconds: float  # wall-clock time of the whole build

    @property
    def utterances_per_minute(self) -> float:
        return 60.0 * self.utterances / self.seconds if self.seconds > 0 else float("inf")


def build_corpus(
    out: str,
    settings: CorpusSettings,
    workers: int = 1,
    force: bool = False,
    progress_seconds: float = 10.0,
    log: Callable[[str], None] = log_to_stderr,
    relative_root: bool = False,
) -> BuildResult:
    """Make the corpus described in the module doc in ``out``; a progress line every ``progress_seconds``.

    The manifests' root is ``out/audio`` as an absolute path, or ``audio`` with ``relative_root``.
    """
    start = time.monotonic()
    settings = settings.resolved()
    root = AUDIO_DIR if relative_root else os.path.join(os.path.abspath(out), AUDIO_DIR)
    described = f"{settings.sentences} sentences, {settings.voices} voices"

    def texts(records: List[Record]) -> Dict[str, str]:
        return corpus_texts(settings, split_sentences(settings), records, root)

    return _build_folder(out, plan_jobs(settings), described, settings.edge_silence_samples, texts, workers,
                         force, progress_seconds, log, start)


def _build_folder(out: str, jobs: List[Job], described: str, edge_silence: int,
                  texts: Callable[[List[Record]], Dict[str, str]], workers: int, force: bool, progress_seconds: float, log: Callable[[str], None],
                  start: float) -> BuildResult:
    """Synthesise ``jobs`` and write ``texts(records)`` in a temporary sibling of ``out``, then move it to ``out``."""
    out = os.path.abspath(out)
    refuse_to_overwrite(out, force)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=os.path.dirname(out))
    try:
        audio_dir = os.path.join(temporary, AUDIO_DIR)
        os.mkdir(audio_dir)
        make = _MakeUtterance(audio_dir, edge_silence)
        log(f"synthesising {len(jobs)} utterances ({described}) with {workers} worker(s) into {temporary}")
        records, last_report = [], start
        for record in _map_jobs(make, jobs, workers):
            records.append(record)
            now = time.monotonic()
            if now - last_report >= progress_seconds:
                last_report = now
                log(progress_line(len(records), len(jobs), now - start))
        for name, text in texts(records).items():
            with open(os.path.join(temporary, name), "w", encoding="utf-8") as handle:
                handle.write(text)
        refuse_to_overwrite(out, force)
        _replace_folder(temporary, out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return BuildResult(out=out, utterances=len(jobs), seconds=time.monotonic() - start)


def progress_line(done: int, total: int, elapsed: float) -> str:
    rate = 60.0 * done / elapsed if elapsed > 0 else 0.0
    return f"synthesised {done}/{total} utterances ({100.0 * done / total:.0f}%), {rate:.0f} utterances/minute"


# -------------------------------------------------------------------------------------------- presets


@dataclass(frozen=True)
class Preset:
    """A named corpus of given sentences, each spoken by every given voice, split by sentence into train and
    valid (the last ``valid_sentences`` sentences). Its manifests' root is ``audio`` (relative, for a corpus
    that is committed); it holds the side files ``side_files``, ``dict.ltr.txt``, ``voices.tsv`` and, with
    ``readme``, a ``README.md`` (``readme(preset, splits, records)``)."""

    name: str
    sentences: Tuple[Sentence, ...]
    voices: Tuple[Voice, ...]
    valid_sentences: int
    side_files: Tuple[str, ...] = SIDE_FILES
    seed: int = 1
    edge_silence_ms: int = 100
    readme: Optional[Callable[["Preset", Dict[str, List[Sentence]], List[Record]], str]] = None

    def splits(self) -> Dict[str, List[Sentence]]:
        """{"train": first sentences, "valid": the last ``valid_sentences``}; CorpusError when either is empty."""
        if not 1 <= self.valid_sentences < len(self.sentences):
            raise CorpusError(
                f"--valid-sentences must be between 1 and {len(self.sentences) - 1} (preset {self.name!r} has "
                f"{len(self.sentences)} sentences), got {self.valid_sentences}"
            )
        cut = len(self.sentences) - self.valid_sentences
        return {"train": list(self.sentences[:cut]), "valid": list(self.sentences[cut:])}

    def texts(self, records: List[Record]) -> Dict[str, str]:
        """File name -> content of every text output."""
        splits = self.splits()
        texts: Dict[str, str] = {}
        for split in splits:
            written = split_texts(split, [r for r in records if r.split == split])  # root line: AUDIO_DIR
            texts.update({name: text for name, text in written.items()
                          if name.endswith(".tsv") or name.rsplit(".", 1)[1] in self.side_files})
        texts["dict.ltr.txt"] = letter_dictionary(letters(r.words) for r in records)
        texts["voices.tsv"] = voices_text(self.voices)
        if self.readme is not None:
            texts["README.md"] = self.readme(self, splits, records)
        return texts


def build_preset(out: str, preset: Preset, workers: int = 1, force: bool = False,
                 progress_seconds: float = 10.0, log: Callable[[str], None] = log_to_stderr) -> BuildResult:
    """Make ``preset`` in ``out`` (replacing a corpus there only with ``force``), as ``build_corpus`` does."""
    start = time.monotonic()
    jobs = [make_job(split, sentence, voice, preset.seed)
            for split, sentences in preset.splits().items() for sentence in sentences for voice in preset.voices]
    described = f"preset {preset.name}: {len(preset.sentences)} sentences, {len(preset.voices)} voices"
    return _build_folder(out, jobs, described, milliseconds_to_samples(preset.edge_silence_ms), preset.texts,
                         workers, force, progress_seconds, log, start)
