"""scripts/make_synthetic_corpus.py and laser_fairseq.data.synthesis on a small real corpus (12 sentences x 8 voices).

The pieces (binding, resampling, labels, grammar, settings, small builds) are tested on their own, without a
corpus, in tests/test_synthesis.py, tests/test_sentences.py and tests/test_corpus_build.py.

Everything is synthesised by the real libespeak-ng of the espeakng-loader wheel; references are independent:
fairseq's CNN front end for frame counts, espeak's phonemiser API for phone sequences, the audio's own spectral
changes for label boundaries, pitch and spectra for the voices.
"""

import filecmp
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from laser_fairseq.cli import make_synthetic_corpus
from laser_fairseq.data import synthesis
from laser_fairseq.data.frames import frame_count
from laser_fairseq.data.manifest import read_manifest
from laser_fairseq.data.prepare import letters
from laser_fairseq.data.sentences import transcript
from laser_fairseq.data.synthetic_corpus import SPLITS, CorpusSettings, build_corpus
from laser_fairseq.checkout import REPO

SCRIPT = os.path.join(REPO, "scripts", "make_synthetic_corpus.py")
SETTINGS = CorpusSettings(sentences=12, voices=8, valid_sentences=2, test_sentences=2, seed=3)
SCRIPT_ARGS = ["--sentences", "12", "--voices", "8", "--valid-sentences", "2", "--test-sentences", "2", "--seed", "3"]
SPEECH_SYSTEM_BINARIES = ("espeak-ng", "espeak", "speak-ng", "speak")


# ----------------------------------------------------------------------------------------------- helpers


def quiet(message):
    pass


def read_lines(corpus, name):
    with open(os.path.join(corpus, name), encoding="utf-8") as handle:
        return handle.read().splitlines()


def utterances(corpus, split):
    """(file name, num_samples) of each manifest line."""
    return [(line.split("\t")[0], int(line.split("\t")[1])) for line in read_lines(corpus, f"{split}.tsv")[1:]]


def all_files(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names)


def path_without_speech_binaries():
    """PATH minus every entry holding an espeak(-ng) executable, so only the wheel can speak."""
    kept = [
        entry for entry in os.environ.get("PATH", "").split(os.pathsep)
        if entry and not any(os.path.exists(os.path.join(entry, name)) for name in SPEECH_SYSTEM_BINARIES)
    ]
    return os.pathsep.join(kept)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Built in this process with one worker."""
    out = str(tmp_path_factory.mktemp("synthetic") / "corpus")
    build_corpus(out, SETTINGS, workers=1, log=quiet)
    return out


@pytest.fixture(scope="module")
def script_run(tmp_path_factory):
    """The same corpus from the command line: two workers, no espeak executable on PATH."""
    out = str(tmp_path_factory.mktemp("synthetic_cli") / "corpus")
    env = dict(os.environ, PATH=path_without_speech_binaries())
    done = subprocess.run(
        [sys.executable, SCRIPT, "--out", out, "--workers", "2"] + SCRIPT_ARGS,
        capture_output=True, text=True, env=env, cwd=REPO,
    )
    return out, done, env["PATH"]


# --------------------------------------------------------------------------------------- the corpus


def test_the_script_runs_with_no_espeak_on_path_and_prints_its_speed(script_run):
    out, done, hidden_path = script_run
    assert done.returncode == 0, done.stderr
    assert all(shutil.which(name, path=hidden_path) is None for name in SPEECH_SYSTEM_BINARIES)
    assert "utterances/minute" in done.stdout and "wrote 96 utterances" in done.stdout
    assert "synthesising 96 utterances" in done.stderr  # the progress log


def test_same_settings_give_the_same_bytes_whatever_the_workers(corpus, script_run):
    other = script_run[0]
    names = all_files(corpus)
    assert names == all_files(other) and len(names) > 96
    manifests = [f"{split}.tsv" for split in SPLITS]
    match, mismatch, errors = filecmp.cmpfiles(corpus, other, [n for n in names if n not in manifests], shallow=False)
    assert mismatch == [] and errors == []
    for name in manifests:  # the same lines under the root line, which names each corpus' own audio folder
        assert read_lines(corpus, name)[0] == os.path.join(corpus, "audio")
        assert read_lines(other, name)[0] == os.path.join(other, "audio")
        assert read_lines(corpus, name)[1:] == read_lines(other, name)[1:]


def test_manifests_and_audio(corpus):
    for split in SPLITS:
        manifest = read_manifest(os.path.join(corpus, f"{split}.tsv"))  # the project's reader
        assert manifest.root == os.path.join(corpus, "audio")
        for entry in manifest.entries:
            info = sf.info(entry.path)
            assert (info.samplerate, info.channels, info.subtype, info.format) == (16_000, 1, "PCM_16", "FLAC")
            assert info.frames == entry.num_samples
    assert sum(len(utterances(corpus, split)) for split in SPLITS) == 96


def test_side_files_are_aligned_with_the_manifests(corpus):
    texts = {row.split("\t")[0]: row.split("\t")[2] for row in read_lines(corpus, "sentences.tsv")[1:]}
    for split in SPLITS:
        files = [name for name, _ in utterances(corpus, split)]
        side = {suffix: read_lines(corpus, f"{split}.{suffix}") for suffix in ("wrd", "ltr", "sent", "voice", "phones", "phn")}
        assert all(len(lines) == len(files) for lines in side.values())
        for index, name in enumerate(files):
            sentence, voice = side["sent"][index], side["voice"][index]
            assert name == f"{sentence}_{voice}.flac"
            assert side["wrd"][index] == transcript(texts[sentence])
            assert side["ltr"][index] == letters(side["wrd"][index])
    voices = [row.split("\t")[0] for row in read_lines(corpus, "voices.tsv")[1:]]
    assert voices == [f"v{i:02d}" for i in range(1, 9)]


def test_splits_are_by_sentence_and_every_sentence_has_every_voice(corpus):
    sentences = {split: read_lines(corpus, f"{split}.sent") for split in SPLITS}
    words = {split: set(read_lines(corpus, f"{split}.wrd")) for split in SPLITS}
    assert [len(set(sentences[split])) for split in SPLITS] == [8, 2, 2]
    for held_out in ("valid", "test"):
        assert not set(sentences[held_out]) & set(sentences["train"])
        assert not words[held_out] & words["train"]
    assert not words["valid"] & words["test"]
    for split in SPLITS:
        pairs = list(zip(sentences[split], read_lines(corpus, f"{split}.voice")))
        assert len(set(pairs)) == len(pairs)
        assert all(count == 8 for count in Counter(sentence for sentence, _ in pairs).values())


def test_label_counts_equal_the_upstream_cnn_frame_counts(corpus):
    """fairseq's own wav2vec2/HuBERT conv front end (a narrow one: only lengths matter) is the reference."""
    from fairseq.models.wav2vec.wav2vec2 import ConvFeatureExtractionModel

    cnn = ConvFeatureExtractionModel([(2, 10, 5)] + [(2, 3, 2)] * 4 + [(2, 2, 2)] * 2).eval()
    for split in SPLITS:
        labels = read_lines(corpus, f"{split}.phn")
        for (_, num_samples), line in zip(utterances(corpus, split), labels):
            with torch.no_grad():
                frames = cnn(torch.zeros(1, num_samples)).shape[-1]
            assert len(line.split()) == frames == frame_count(num_samples)


def test_silence_is_labelled_at_both_ends_and_is_silent(corpus):
    for split in SPLITS:
        for (name, _), line in zip(utterances(corpus, split), read_lines(corpus, f"{split}.phn")):
            labels = line.split()
            assert labels[0] == labels[-1] == "sil" and len(set(labels)) > 5
            audio, _ = sf.read(os.path.join(corpus, "audio", name), dtype="int16")
            assert not audio[:FIRST_FRAME_END].any() and not audio[-FIRST_FRAME_END:].any()


FIRST_FRAME_END = 400  # the first frame covers samples [0, 400); 100 ms of edge silence covers it


def test_dictionaries_count_every_symbol(corpus):
    for name, suffix in (("dict.phn.txt", "phn"), ("dict.ltr.txt", "ltr")):
        counts = Counter(symbol for split in SPLITS for line in read_lines(corpus, f"{split}.{suffix}") for symbol in line.split())
        rows = [line.split(" ") for line in read_lines(corpus, name)]
        assert {symbol: int(count) for symbol, count in rows} == counts
        assert [int(count) for _, count in rows] == sorted((int(count) for _, count in rows), reverse=True)
    assert "sil" in {line.split()[0] for line in read_lines(corpus, "dict.phn.txt")}


def test_phones_are_what_espeak_phonemiser_says(corpus):
    """.phones (from synthesis events) == espeak_TextToPhonemes, and the frame labels follow that sequence."""
    texts = {row.split("\t")[0]: row.split("\t")[2] for row in read_lines(corpus, "sentences.tsv")[1:]}
    voices = {voice.voice_id: voice for voice in synthesis.VOICES}
    split = "valid"
    rows = zip(read_lines(corpus, f"{split}.sent"), read_lines(corpus, f"{split}.voice"),
               read_lines(corpus, f"{split}.phones"), read_lines(corpus, f"{split}.phn"))
    for sentence, voice, phones, frames in rows:
        with synthesis.fresh_espeak() as espeak:
            espeak.set_voice(voices[voice])
            phonemised = [synthesis.normalise_phone(p) for p in espeak.text_to_phonemes(texts[sentence])]
        assert phones.split() == phonemised
        runs = [label for index, label in enumerate(frames.split()) if index == 0 or label != frames.split()[index - 1]]
        spoken_runs = [label for label in runs if label != "sil"]
        assert is_subsequence(spoken_runs, phones.split())
        assert len(spoken_runs) >= 0.8 * len(phones.split())  # only phones shorter than a frame may vanish


def is_subsequence(short, long):
    remaining = iter(long)
    return all(symbol in remaining for symbol in short)


def spectral_change(audio):
    """(N,) log-mel spectral change every 5 ms (centred difference)."""
    mel = torchaudio.transforms.MelSpectrogram(16_000, n_fft=400, hop_length=80, n_mels=40)
    log_mel = torch.log(mel(torch.from_numpy(audio)) + 1e-6).T
    change = torch.zeros(log_mel.shape[0])
    change[1:-1] = (log_mel[2:] - log_mel[:-2]).norm(dim=1)
    return change.numpy()


def boundary_hit_rate(corpus, shift_seconds):
    """Share of phone-to-phone label boundaries within 20 ms of a clear spectral-change peak."""
    hits = total = 0
    for (name, _), line in zip(utterances(corpus, "train"), read_lines(corpus, "train.phn")):
        audio, _ = sf.read(os.path.join(corpus, "audio", name), dtype="float32")
        change = spectral_change(audio)
        peaks = np.array([
            i for i in range(1, change.size - 1)
            if change[i] >= change[i - 1] and change[i] > change[i + 1] and change[i] > np.percentile(change, 60)
        ]) * 0.005
        labels = line.split()
        for frame in range(1, len(labels)):
            if labels[frame] != labels[frame - 1] and "sil" not in (labels[frame], labels[frame - 1]):
                boundary = (320 * frame + 40) / 16_000 + shift_seconds  # halfway between the two frame centres
                hits += np.min(np.abs(peaks - boundary)) <= 0.02
                total += 1
    return hits / total


def test_label_boundaries_fall_on_spectral_changes(corpus):
    aligned = boundary_hit_rate(corpus, 0.0)
    assert aligned >= 0.85
    for shift in (-0.04, 0.03, 0.05):  # the control: the same labels moved in time score clearly worse
        assert boundary_hit_rate(corpus, shift) <= aligned - 0.12


def median_f0(audio):
    """Median autocorrelation pitch (60-400 Hz) over loud, clearly periodic 40 ms frames."""
    estimates = []
    for start in range(0, audio.size - 640, 320):
        frame = audio[start:start + 640] - audio[start:start + 640].mean()
        if np.sqrt(np.mean(frame ** 2)) < 0.02:
            continue
        correlation = np.correlate(frame, frame, "full")[639:]
        lag = 40 + int(np.argmax(correlation[40:267]))
        if correlation[lag] > 0.5 * correlation[0]:
            estimates.append(16_000 / lag)
    return float(np.median(estimates))


def test_voices_are_clearly_different(corpus):
    """Pitch differs pair by pair, and a nearest-centroid classifier on mean log-mel spectra tells the voices
    apart on sentences it never saw."""
    mel = torchaudio.transforms.MelSpectrogram(16_000, n_fft=400, hop_length=320, n_mels=40, center=False)
    features, pitch = [], {}
    for split in SPLITS:
        rows = zip(utterances(corpus, split), read_lines(corpus, f"{split}.voice"), read_lines(corpus, f"{split}.phn"))
        for (name, _), voice, line in rows:
            audio, _ = sf.read(os.path.join(corpus, "audio", name), dtype="float32")
            speech = np.array([label != "sil" for label in line.split()])
            log_mel = torch.log(mel(torch.from_numpy(audio)) + 1e-6).T.numpy()
            features.append((split, voice, log_mel[speech].mean(0)))
            pitch.setdefault(voice, []).append(median_f0(audio))
    voices = sorted(pitch)
    f0 = {voice: np.median(values) for voice, values in pitch.items()}
    for index, first in enumerate(voices):
        for second in voices[index + 1:]:
            assert abs(np.log(f0[first] / f0[second])) > np.log(1.08), (first, second, f0)
    centroids = {v: np.mean([f for s, u, f in features if u == v and s == "train"], axis=0) for v in voices}
    held_out = [(v, f) for s, v, f in features if s != "train"]
    correct = sum(min(voices, key=lambda u: np.linalg.norm(f - centroids[u])) == v for v, f in held_out)
    assert correct / len(held_out) >= 0.9


def test_corpus_json_records_settings_versions_and_counts(corpus):
    with open(os.path.join(corpus, "corpus.json")) as handle:
        description = json.load(handle)
    assert description["settings"]["voices_per_sentence"] == 8 and description["settings"]["seed"] == 3
    assert description["versions"]["libespeak-ng"] == "1.52.0"
    assert description["versions"]["espeakng-loader"] == "0.2.4"
    assert description["counts"]["train"]["utterances"] == 64
    assert description["counts"]["test"]["frames"] == sum(len(line.split()) for line in read_lines(corpus, "test.phn"))
    assert set(description["phones"]) == {line.split()[0] for line in read_lines(corpus, "dict.phn.txt")}


# ------------------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--sentences", "15", "--valid-sentences", "8", "--test-sentences", "7"],
         "--valid-sentences 8 + --test-sentences 7 leave no train sentence out of --sentences 15"),
        (["--voices", "13"], "--voices must be between 1 and 12"),
        (["--voices", "4", "--voices-per-sentence", "5"], "--voices-per-sentence must be between 1 and --voices (4)"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--edge-silence-ms", "-5"], "--edge-silence-ms must be between 0 and 2000"),
    ],
)
def test_bad_arguments_give_clear_errors(tmp_path, capsys, arguments, message):
    out = str(tmp_path / "corpus")
    assert make_synthetic_corpus.main(["--out", out] + arguments) == 1
    assert message in capsys.readouterr().err
    assert not os.path.exists(out) and os.listdir(tmp_path) == []
