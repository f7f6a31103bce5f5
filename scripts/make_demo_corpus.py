#!/usr/bin/env python3
"""Synthesise the small demo speech corpus bundled with laser-fairseq.

Every sentence in ``SENTENCES`` is spoken by every voice in ``VOICES`` with
espeak-ng, so the same content exists in several voices. Audio is resampled
from espeak's 22.05 kHz to 16 kHz mono, trimmed of long edge silence and
stored as 16-bit FLAC.

Layout written under ``--out-dir`` (default: ``manifests/demo`` in the repo):

    audio/<sentid>_<voiceid>.flac   e.g. audio/s01_v1.flac
    train.tsv, valid.tsv            fairseq audio manifests
    train.wrd, valid.wrd            upper-case words, punctuation removed
    train.ltr, valid.ltr            letter targets ("H E L L O | W O R L D |")
    train.sent, valid.sent          sentence id of each utterance
    train.voice, valid.voice        voice id of each utterance
    dict.ltr.txt                    fairseq dictionary of the letter targets
    voices.tsv                      voice id -> espeak voice, pitch, rate
    README.md                       description of the corpus

Manifest format: the first line is the root directory, every further line is
``relative/path<TAB>num_samples``. The root is written as ``audio``, a path
RELATIVE TO THE MANIFEST'S OWN FOLDER: the project's pretraining task resolves
a relative root against the directory holding the ``.tsv`` file, so the corpus
works from any checkout location. The side files (.wrd/.ltr/.sent/.voice) have
one line per audio line of the manifest (the root line is not counted).

The split is by sentence: ``valid`` holds all voices of the last
``--valid-sentences`` sentences and ``train`` holds the rest, so validation
content is never seen in training.

Output is deterministic: the same espeak-ng, torchaudio and libsndfile versions
give byte-identical files (no timestamps are stored anywhere).

Requires espeak-ng (``apt-get install espeak-ng``), torch, torchaudio,
numpy and soundfile. Regenerate the bundled corpus with:

    python scripts/make_demo_corpus.py --force
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import wave
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio

try:
    import soundfile
except ImportError as error:  # pragma: no cover - depends on the environment
    raise SystemExit(
        "error: the Python package `soundfile` is missing; "
        "install it with `pip install soundfile`"
    ) from error

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "manifests" / "demo"
AUDIO_DIR_NAME = "audio"
SPLITS = ("train", "valid")
SIDE_FILE_SUFFIXES = ("tsv", "wrd", "ltr", "sent", "voice")

TARGET_SAMPLE_RATE = 16_000
MIN_SECONDS = 1.0
MAX_SECONDS = 4.0
# Samples quieter than this (fraction of full scale) count as edge silence.
SILENCE_THRESHOLD = 0.01
# Silence kept before the first and after the last audible sample.
EDGE_PADDING_SECONDS = 0.1
# Files must be clearly audible, not just non-zero.
MIN_RMS = 0.01

# Written for this corpus: short, phonetically varied, digit-free (digits would
# be spoken as words and break the transcripts). The last ones go to `valid`.
SENTENCES: dict[str, str] = {
    "s01": "Seven thirsty zebras drank slowly.",
    "s02": "Joyful children chased yellow kites.",
    "s03": "The old clock chimed at noon.",
    "s04": "Please fetch warm bread and cheese.",
    "s05": "A quiet fox crept through the garden.",
    "s06": "Thunder shook the windows.",
    "s07": "Gentle waves washed the pebbles.",
    "s08": "My brother bought a shiny violin.",
    "s09": "Each voyage needs a brave choice.",
    "s10": "The judge measured the huge pumpkin.",
    "s11": "Heavy rain soaked the village.",
    "s12": "Would you like orange juice?",
    "s13": "Bright stars sparkled above the harbour.",
    "s14": "Nobody noticed the purple umbrella.",
    "s15": "Quickly zip your jacket.",
    "s16": "Thick fog hid the ships.",
}


@dataclass(frozen=True)
class Voice:
    """One speaker: an espeak-ng voice+variant with its pitch and rate."""

    voice_id: str
    espeak_voice: str  # "<language>+<variant>", e.g. "en-us+m3"
    pitch: int  # espeak -p, 0..99 (default 50)
    rate: int  # espeak -s, words per minute (default 175)
    description: str

    @property
    def language(self) -> str:
        return self.espeak_voice.split("+", 1)[0]

    @property
    def variant(self) -> str:
        return self.espeak_voice.split("+", 1)[1]


# Sixteen sentences in five voices keep the committed FLACs under ~3 MB.
VOICES: tuple[Voice, ...] = (
    Voice("v1", "en-us+m3", 45, 174, "American English, male"),
    Voice("v2", "en-gb+f2", 62, 182, "British English, female"),
    Voice("v3", "en-gb-scotland+m1", 36, 168, "Scottish English, male"),
    Voice("v4", "en-029+f4", 70, 178, "Caribbean English, female"),
    Voice("v5", "en-gb-x-rp+m7", 52, 190, "Received Pronunciation English, male"),
)


@dataclass(frozen=True)
class Utterance:
    """One synthesised file and the metadata that goes into the side files."""

    sentence_id: str
    voice_id: str
    words: str
    num_samples: int

    @property
    def file_name(self) -> str:
        return utterance_file_name(self.sentence_id, self.voice_id)


def utterance_file_name(sentence_id: str, voice_id: str) -> str:
    return f"{sentence_id}_{voice_id}.flac"


# --------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------


def normalise_transcript(text: str) -> str:
    """LibriSpeech-style words: upper case, only A-Z and apostrophes."""
    kept = "".join(ch if ch.isalpha() or ch == "'" else " " for ch in text.upper())
    return " ".join(kept.split())


def letter_targets(words: str) -> str:
    """fairseq letter targets, as examples/wav2vec/libri_labels.py writes them."""
    return " ".join(words.replace(" ", "|")) + " |"


def check_sentences(sentences: dict[str, str]) -> None:
    """Reject text whose transcript would not match what espeak says."""
    for sentence_id, text in sentences.items():
        if any(ch.isdigit() for ch in text):
            raise ValueError(f"{sentence_id}: spell out numbers, got {text!r}")
        if not normalise_transcript(text):
            raise ValueError(f"{sentence_id}: no words in {text!r}")


# --------------------------------------------------------------------------
# espeak-ng
# --------------------------------------------------------------------------


def find_espeak() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise SystemExit(
            "error: espeak-ng not found on PATH; install it with "
            "`apt-get install espeak-ng`"
        )
    return path


def run_espeak(espeak: str, *args: str) -> str:
    result = subprocess.run(
        [espeak, *args], check=True, capture_output=True, text=True
    )
    return result.stdout


def installed_languages(espeak: str) -> set[str]:
    """Language codes listed by `espeak-ng --voices`."""
    lines = run_espeak(espeak, "--voices").splitlines()[1:]
    return {line.split()[1] for line in lines if line.strip()}


def installed_variants(espeak: str) -> set[str]:
    """Variant names (e.g. "m3") listed by `espeak-ng --voices=variant`."""
    lines = run_espeak(espeak, "--voices=variant").splitlines()[1:]
    files = (line.split()[4] for line in lines if len(line.split()) >= 5)
    return {name.removeprefix("!v/") for name in files}


def check_voices_exist(espeak: str, voices: tuple[Voice, ...]) -> None:
    """espeak-ng silently falls back on unknown voices, so check up front."""
    languages = installed_languages(espeak)
    variants = installed_variants(espeak)
    for voice in voices:
        if voice.language not in languages:
            raise SystemExit(f"error: espeak-ng has no voice {voice.language!r}")
        if voice.variant not in variants:
            raise SystemExit(f"error: espeak-ng has no variant {voice.variant!r}")


def synthesise(
    espeak: str, text: str, voice: Voice, work_dir: Path
) -> tuple[np.ndarray, int]:
    """Speak `text`; return int16 mono samples and their sample rate."""
    wav_path = work_dir / "utterance.wav"
    run_espeak(
        espeak,
        "-v", voice.espeak_voice,
        "-p", str(voice.pitch),
        "-s", str(voice.rate),
        "-w", str(wav_path),
        text,
    )
    with wave.open(str(wav_path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise RuntimeError(f"unexpected espeak output format in {wav_path}")
        sample_rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return samples, sample_rate


# --------------------------------------------------------------------------
# Audio
# --------------------------------------------------------------------------


def resample_to_target(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """int16 at `sample_rate` -> float32 in [-1, 1] at TARGET_SAMPLE_RATE."""
    waveform = torch.from_numpy(samples.astype(np.float32) / 32768.0)
    resampled = torchaudio.functional.resample(
        waveform, orig_freq=sample_rate, new_freq=TARGET_SAMPLE_RATE
    )
    return resampled.numpy()


def trim_edge_silence(audio: np.ndarray) -> np.ndarray:
    """Cut leading/trailing silence, keeping EDGE_PADDING_SECONDS of it."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE_THRESHOLD)
    if loud.size == 0:
        return audio
    padding = int(EDGE_PADDING_SECONDS * TARGET_SAMPLE_RATE)
    start = max(0, loud[0] - padding)
    stop = min(audio.size, loud[-1] + 1 + padding)
    return audio[start:stop]


def to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(audio * 32768.0), -32768, 32767).astype(np.int16)


def check_audio(audio: np.ndarray, name: str) -> None:
    """Fail loudly if a file is too short, too long or (nearly) silent."""
    seconds = audio.size / TARGET_SAMPLE_RATE
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise SystemExit(
            f"error: {name} lasts {seconds:.2f} s, outside "
            f"[{MIN_SECONDS}, {MAX_SECONDS}] s; shorten the text or change the rate"
        )
    rms = float(np.sqrt(np.mean((audio.astype(np.float64) / 32768.0) ** 2)))
    if rms < MIN_RMS:
        raise SystemExit(f"error: {name} is nearly silent (RMS {rms:.4f})")


def write_flac(path: Path, audio: np.ndarray) -> None:
    """16-bit FLAC at the strongest compression (keeps the repo small)."""
    soundfile.write(
        path, audio, TARGET_SAMPLE_RATE,
        format="FLAC", subtype="PCM_16", compression_level=1.0,
    )


def make_utterance(
    espeak: str, sentence_id: str, voice: Voice, audio_dir: Path, work_dir: Path
) -> Utterance:
    """Synthesise, convert, check and store one sentence in one voice."""
    text = SENTENCES[sentence_id]
    samples, sample_rate = synthesise(espeak, text, voice, work_dir)
    audio = to_int16(trim_edge_silence(resample_to_target(samples, sample_rate)))
    file_name = utterance_file_name(sentence_id, voice.voice_id)
    check_audio(audio, file_name)
    write_flac(audio_dir / file_name, audio)
    words = normalise_transcript(text)
    return Utterance(sentence_id, voice.voice_id, words, audio.size)


# --------------------------------------------------------------------------
# Output files
# --------------------------------------------------------------------------


def generated_paths(out_dir: Path) -> list[Path]:
    """Every non-audio file this script writes."""
    side_files = [out_dir / f"{s}.{x}" for s in SPLITS for x in SIDE_FILE_SUFFIXES]
    shared_files = [out_dir / n for n in ("dict.ltr.txt", "voices.tsv", "README.md")]
    return side_files + shared_files


def prepare_out_dir(out_dir: Path, force: bool) -> Path:
    """Create the output folders; clear an old corpus only with --force."""
    audio_dir = out_dir / AUDIO_DIR_NAME
    old_audio = sorted(audio_dir.glob("*.flac")) if audio_dir.is_dir() else []
    old_files = [p for p in generated_paths(out_dir) if p.exists()] + old_audio
    if old_files and not force:
        raise SystemExit(
            f"error: {out_dir} already holds a corpus ({len(old_files)} files); "
            "refusing to overwrite it. Pass --force to regenerate."
        )
    for path in old_files:
        path.unlink()
    audio_dir.mkdir(parents=True, exist_ok=True)
    return audio_dir


def write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def write_split(out_dir: Path, split: str, utterances: list[Utterance]) -> None:
    """Write the manifest and its line-aligned side files for one split."""
    ordered = sorted(utterances, key=lambda u: (u.sentence_id, u.voice_id))
    manifest = [AUDIO_DIR_NAME] + [f"{u.file_name}\t{u.num_samples}" for u in ordered]
    write_lines(out_dir / f"{split}.tsv", manifest)
    write_lines(out_dir / f"{split}.wrd", [u.words for u in ordered])
    write_lines(out_dir / f"{split}.ltr", [letter_targets(u.words) for u in ordered])
    write_lines(out_dir / f"{split}.sent", [u.sentence_id for u in ordered])
    write_lines(out_dir / f"{split}.voice", [u.voice_id for u in ordered])


def write_letter_dictionary(out_dir: Path, utterances: list[Utterance]) -> None:
    """fairseq dictionary: `SYMBOL COUNT`, most frequent first."""
    counts = Counter(
        symbol for u in utterances for symbol in letter_targets(u.words).split()
    )
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"{symbol} {count}" for symbol, count in ranked]
    write_lines(out_dir / "dict.ltr.txt", lines)


def write_voice_table(out_dir: Path) -> None:
    header = "voice_id\tespeak_voice\tpitch\trate\tdescription"
    rows = [
        f"{v.voice_id}\t{v.espeak_voice}\t{v.pitch}\t{v.rate}\t{v.description}"
        for v in VOICES
    ]
    write_lines(out_dir / "voices.tsv", [header] + rows)


def readme_text(splits: dict[str, list[str]], utterances: list[Utterance]) -> str:
    """Markdown description of the corpus, generated so it never goes stale."""
    seconds = [u.num_samples / TARGET_SAMPLE_RATE for u in utterances]
    sentence_rows = "\n".join(
        f"| {sid} | {'valid' if sid in splits['valid'] else 'train'} | {text} |"
        for sid, text in SENTENCES.items()
    )
    voice_rows = "\n".join(
        f"| {v.voice_id} | `{v.espeak_voice}` | {v.pitch} | {v.rate} "
        f"| {v.description} |"
        for v in VOICES
    )
    return f"""# Demo speech corpus

A tiny synthetic English corpus for smoke tests and demos of laser-fairseq.
It is NOT meant for real training: every file is espeak-ng speech.

- {len(SENTENCES)} sentences, each spoken by all {len(VOICES)} voices:
  {len(utterances)} files, {min(seconds):.2f}-{max(seconds):.2f} s each,
  {sum(seconds):.1f} s in total.
- 16 kHz mono, 16-bit FLAC in `audio/<sentid>_<voiceid>.flac`.
- Split by sentence: `valid` holds all voices of sentences
  {", ".join(splits["valid"])}; `train` holds the other
  {len(splits["train"])} sentences. Validation content is unseen in training.

## Files

| file | content |
| --- | --- |
| `train.tsv`, `valid.tsv` | fairseq manifests: root `audio`, then `file<TAB>num_samples` |
| `*.wrd` | transcript: upper-case words, punctuation removed (LibriSpeech style) |
| `*.ltr` | fairseq letter targets, `|` marks word ends (as `libri_labels.py`) |
| `*.sent` | sentence id of each utterance |
| `*.voice` | voice id of each utterance (see `voices.tsv`) |
| `dict.ltr.txt` | fairseq dictionary of letters and `|` over train+valid |
| `voices.tsv` | voice id, espeak-ng voice, pitch (`-p`), rate (`-s`) |

The side files have one line per audio line of the manifest with the same
name (the root line is not counted). The manifest root `audio` is relative to
the folder holding the manifest, so the committed corpus works from any
checkout; laser-fairseq resolves it against that folder. fairseq's own tasks
join it with the working directory: give them the absolute copies
`python scripts/absolute_manifests.py manifests/demo --out DEST` writes.

## Sentences

| id | split | text |
| --- | --- | --- |
{sentence_rows}

## Voices

| id | espeak-ng voice | pitch | rate (wpm) | description |
| --- | --- | --- | --- | --- |
{voice_rows}

## Regenerating

Needs espeak-ng (`apt-get install espeak-ng`), torch, torchaudio, numpy and
soundfile. From the repository root:

<!-- run: syntax -->
```bash
python scripts/make_demo_corpus.py --force
```

Output is deterministic for the same espeak-ng / torchaudio / libsndfile
versions. See `python scripts/make_demo_corpus.py --help` for options.
"""


# --------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------


def split_sentences(valid_sentences: int) -> dict[str, list[str]]:
    """Last `valid_sentences` sentence ids -> valid, the rest -> train."""
    sentence_ids = list(SENTENCES)
    if not 1 <= valid_sentences < len(sentence_ids):
        raise SystemExit(
            f"error: --valid-sentences must be between 1 and "
            f"{len(sentence_ids) - 1}, got {valid_sentences}"
        )
    cut = len(sentence_ids) - valid_sentences
    return {"train": sentence_ids[:cut], "valid": sentence_ids[cut:]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Synthesise the demo speech corpus (espeak-ng, 16 kHz FLAC, "
        "fairseq manifests split by sentence).",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help="output folder (default: manifests/demo in the repository)",
    )
    parser.add_argument(
        "--valid-sentences",
        type=int,
        default=3,
        help="how many sentence ids (the last ones) form the validation split; "
        "all their voices go to valid (default: 3)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing corpus in --out-dir",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    splits = split_sentences(args.valid_sentences)
    check_sentences(SENTENCES)
    espeak = find_espeak()
    check_voices_exist(espeak, VOICES)
    torch.set_num_threads(1)  # fixed reduction order -> reproducible samples

    out_dir = args.out_dir.resolve()
    audio_dir = prepare_out_dir(out_dir, args.force)
    by_split: dict[str, list[Utterance]] = {split: [] for split in SPLITS}
    with tempfile.TemporaryDirectory() as tmp:
        for split, sentence_ids in splits.items():
            for sentence_id in sentence_ids:
                for voice in VOICES:
                    by_split[split].append(
                        make_utterance(espeak, sentence_id, voice, audio_dir, Path(tmp))
                    )

    all_utterances = by_split["train"] + by_split["valid"]
    for split in SPLITS:
        write_split(out_dir, split, by_split[split])
    write_letter_dictionary(out_dir, all_utterances)
    write_voice_table(out_dir)
    readme = readme_text(splits, all_utterances)
    (out_dir / "README.md").write_text(readme, encoding="utf-8")

    seconds = [u.num_samples / TARGET_SAMPLE_RATE for u in all_utterances]
    print(
        f"wrote {len(all_utterances)} files ({len(by_split['train'])} train, "
        f"{len(by_split['valid'])} valid), {min(seconds):.2f}-{max(seconds):.2f} s "
        f"each, to {out_dir}"
    )


if __name__ == "__main__":
    sys.exit(main())
