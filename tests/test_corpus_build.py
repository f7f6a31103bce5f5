"""laser_fairseq.data.synthetic_corpus piece by piece: settings, the utterance plan, the text outputs, folder
handling, builds of a few utterances (refusal, atomicity, interruption, workers) and presets.

Fast and in process (corpora of 2-15 utterances): the tests `make mutate MUTATE_SCOPE=corpus` runs. The
properties of a full corpus against independent references are in tests/test_synthetic_corpus.py.
"""

import inspect
import json
import os
import shutil
import tempfile
import time
import zlib
from collections import Counter

import pytest
import soundfile as sf
import torch
import torchaudio

from laser_fairseq.cli import make_synthetic_corpus
from laser_fairseq.data import synthesis
from laser_fairseq.data import synthetic_corpus as sc
from laser_fairseq.data.prepare import letters
from laser_fairseq.data.sentences import Sentence, draw_sentences
from laser_fairseq.data.synthetic_corpus import SPLITS, CorpusError, CorpusSettings, Record, build_corpus
from worker_pools import recording_worker_context




def quiet(message):
    pass


def all_files(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names)


def read_lines(corpus, name):
    with open(os.path.join(corpus, name), encoding="utf-8") as handle:
        return handle.read().splitlines()


def contents(folder):
    return {name: open(os.path.join(folder, name), "rb").read() for name in all_files(folder)}


# ------------------------------------------------------------------------------------------- settings


def test_held_out_defaults_are_a_tenth_and_at_least_one():
    assert CorpusSettings(sentences=250).resolved() == CorpusSettings(
        sentences=250, voices=8, voices_per_sentence=8, valid_sentences=25, test_sentences=25)
    assert CorpusSettings(sentences=5, voices=3).resolved().valid_sentences == 1  # round(0.5) = 0 -> 1
    assert CorpusSettings(sentences=36).resolved().test_sentences == 4
    kept = CorpusSettings(sentences=30, voices=4, voices_per_sentence=2, valid_sentences=3, test_sentences=5,
                          seed=9, edge_silence_ms=40)
    assert kept.resolved() == kept


@pytest.mark.parametrize("changes, accepted", [
    ({"voices": 1, "voices_per_sentence": 1}, True), ({"voices": 12, "voices_per_sentence": 12}, True),
    ({"voices": 0, "voices_per_sentence": 0}, False), ({"voices": 13, "voices_per_sentence": 13}, False),
    ({"voices_per_sentence": 0}, False), ({"voices_per_sentence": 5}, False),
    ({"valid_sentences": 0}, False), ({"test_sentences": 0}, False),
    ({"valid_sentences": 4, "test_sentences": 5}, True), ({"valid_sentences": 5, "test_sentences": 5}, False),
    ({"edge_silence_ms": 0}, True), ({"edge_silence_ms": 2000}, True),
    ({"edge_silence_ms": -1}, False), ({"edge_silence_ms": 2001}, False),
])
def test_settings_are_checked_at_their_bounds(changes, accepted):
    settings = CorpusSettings(**dict(dict(sentences=10, voices=4, voices_per_sentence=4, valid_sentences=1,
                                          test_sentences=1), **changes))
    if accepted:
        settings._check()
    else:
        with pytest.raises(CorpusError):
            settings._check()


def test_edge_silence_is_a_whole_number_of_samples():
    assert [CorpusSettings(edge_silence_ms=ms).edge_silence_samples for ms in (0, 1, 3, 100)] == [0, 16, 48, 1_600]
    assert type(CorpusSettings(edge_silence_ms=1).edge_silence_samples) is int


# ---------------------------------------------------------------------------------------------- plan


def test_sentences_split_in_order_with_the_last_ones_held_out():
    settings = CorpusSettings(sentences=7, valid_sentences=2, test_sentences=1, seed=4)
    splits = sc.split_sentences(settings)
    drawn = draw_sentences(7, 4)
    assert splits == {"train": drawn[:4], "valid": drawn[4:6], "test": drawn[6:]}
    with pytest.raises(CorpusError, match="--sentences 0: need at least 1 sentence"):
        sc.split_sentences(CorpusSettings(sentences=0, valid_sentences=1, test_sentences=1))


def test_jobs_rotate_through_the_voices_with_their_own_noise_seeds():
    settings = CorpusSettings(sentences=4, voices=3, voices_per_sentence=2, valid_sentences=1, test_sentences=1,
                              seed=5).resolved()
    jobs = sc.plan_jobs(settings)
    assert [(job.split, job.sentence.sentence_id, job.voice.voice_id) for job in jobs] == [
        ("train", "s0001", "v01"), ("train", "s0001", "v02"),
        ("train", "s0002", "v01"), ("train", "s0002", "v03"),  # voices 2, 3 (mod 3) = v03, v01, in id order
        ("valid", "s0003", "v02"), ("valid", "s0003", "v03"),
        ("test", "s0004", "v01"), ("test", "s0004", "v02"),
    ]
    assert jobs[3].utterance_id == "s0002_v03"
    # the noise seed depends on the corpus seed, the sentence and the voice only (not on other settings)
    assert [job.noise_seed for job in jobs] == [zlib.crc32(f"5/{job.utterance_id}".encode()) for job in jobs]
    assert len({job.noise_seed for job in jobs}) == len(jobs)
    every = sc.plan_jobs(CorpusSettings(sentences=3, voices=2, valid_sentences=1, test_sentences=1).resolved())
    assert [job.utterance_id for job in every] == ["s0001_v01", "s0001_v02", "s0002_v01", "s0002_v02",
                                                   "s0003_v01", "s0003_v02"]
    assert [job.split for job in every] == ["train", "train", "valid", "valid", "test", "test"]


# --------------------------------------------------------------------------------------- text outputs


def record(split, sentence, voice, words, num_samples, phones, labels):
    return Record(split, f"{sentence}_{voice}", sentence, voice, words, num_samples, phones, labels)


RECORDS = [
    record("train", "s0001", "v01", "IVY RAN", 1_040, "aI v i r a n", "sil aI r sil"),
    record("train", "s0001", "v02", "IVY RAN", 720, "aI v i r a n", "sil aI"),
    record("valid", "s0002", "v01", "LEO SAT", 401, "l i oU s a t", "sil"),
    record("test", "s0003", "v02", "AMOS NAPPED", 16_400, "eI m @ s n a p t", " ".join(["sil"] + ["a"] * 50)),
]


def test_split_texts_are_aligned_line_by_line():
    texts = sc.split_texts("train", RECORDS[:2])
    assert texts == {
        "train.tsv": "audio\ns0001_v01.flac\t1040\ns0001_v02.flac\t720\n",
        "train.wrd": "IVY RAN\nIVY RAN\n",
        "train.ltr": "I V Y | R A N |\nI V Y | R A N |\n",
        "train.sent": "s0001\ns0001\n",
        "train.voice": "v01\nv02\n",
        "train.phones": "aI v i r a n\naI v i r a n\n",
        "train.phn": "sil aI r sil\nsil aI\n",
    }
    assert sc.split_texts("test", [])["test.tsv"] == "audio\n" and sc.split_texts("test", [])["test.wrd"] == ""


def test_voice_and_sentence_tables():
    voices = synthesis.VOICES[:2]
    assert sc.voices_text(voices) == (
        "voice_id\tespeak_voice\tpitch\tpitch_range\trate\tdescription\n"
        "v01\ten-us+m3\t45\t50\t170\tAmerican English, male\n"
        "v02\ten+f2\t50\t60\t180\tBritish English, female\n"
    )
    splits = {"train": [Sentence("s0001", "Ivy ran.")], "valid": [], "test": [Sentence("s0002", "Leo sat?")]}
    assert sc.sentences_text(splits) == "sentence_id\tsplit\ttext\ns0001\ttrain\tIvy ran.\ns0002\ttest\tLeo sat?\n"


def test_corpus_texts_count_every_split_symbol_and_second():
    settings = CorpusSettings(sentences=3, voices=2, valid_sentences=1, test_sentences=1, seed=2).resolved()
    splits = {"train": [Sentence("s0001", "Ivy ran.")], "valid": [Sentence("s0002", "Leo sat.")],
              "test": [Sentence("s0003", "Amos napped.")]}
    texts = sc.corpus_texts(settings, splits, RECORDS)
    expected_names = {f"{split}.{suffix}" for split in SPLITS for suffix in ("tsv",) + sc.SIDE_FILES}
    assert set(texts) == expected_names | {"dict.ltr.txt", "dict.phn.txt", "voices.tsv", "sentences.tsv", "corpus.json"}
    assert texts["valid.tsv"] == "audio\ns0002_v01.flac\t401\n"
    assert texts["dict.phn.txt"] == "a 50\nsil 5\naI 2\nr 1\n"
    ltr = Counter(symbol for r in RECORDS for symbol in letters(r.words).split())
    assert texts["dict.ltr.txt"].splitlines()[0] == f"| {ltr['|']}" and len(texts["dict.ltr.txt"].splitlines()) == len(ltr)
    assert texts["voices.tsv"] == sc.voices_text(synthesis.VOICES[:2])
    description = json.loads(texts["corpus.json"])
    assert texts["corpus.json"] == json.dumps(description, indent=2, sort_keys=True) + "\n"
    assert description["counts"] == {
        "train": {"utterances": 2, "sentences": 1, "voices": 2, "seconds": 0.11, "frames": 3 + 2},
        "valid": {"utterances": 1, "sentences": 1, "voices": 1, "seconds": 0.025, "frames": 1},  # 0.0250625 s
        "test": {"utterances": 1, "sentences": 1, "voices": 1, "seconds": 1.025, "frames": 51},
    }
    assert description["phones"] == ["a", "aI", "r", "sil"] and description["grammar_version"] == 1
    assert description["settings"]["voices_per_sentence"] == 2 and description["settings"]["seed"] == 2
    assert description["audio"] == {"sample_rate": 16_000, "format": "FLAC", "subtype": "PCM_16",
                                    "synthesiser_sample_rate": 22_050}
    assert description["frames"] == {"window": 400, "hop": 320, "label_rate": 50,
                                     "count": "floor((samples - 400) / 320) + 1",
                                     "label": "phone covering sample 320 * t + 200", "silence": "sil"}
    assert '"label_rate": 50,' in texts["corpus.json"]  # an integer rate, as fairseq's label_rate
    assert description["generator"] == "scripts/make_synthetic_corpus.py (laser_fairseq.data.synthetic_corpus)"
    assert description["versions"] == {"espeakng-loader": "0.2.4", "libespeak-ng": "1.52.0",
                                       "torchaudio": torchaudio.__version__, "libsndfile": sf.__libsndfile_version__}
    assert set(description) == {"generator", "settings", "grammar_version", "versions", "audio", "frames", "counts",
                                "phones"}


def test_progress_and_speed_lines():
    assert sc.progress_line(3, 12, 5.0) == "synthesised 3/12 utterances (25%), 36 utterances/minute"
    assert sc.progress_line(1, 3, 0.0) == "synthesised 1/3 utterances (33%), 0 utterances/minute"
    assert sc.progress_line(3, 12, 0.5) == "synthesised 3/12 utterances (25%), 360 utterances/minute"
    assert sc.BuildResult("x", 10, 30.0).utterances_per_minute == 20.0
    assert sc.BuildResult("x", 10, 0.0).utterances_per_minute == float("inf")


# ------------------------------------------------------------------------------------ folder handling


def test_refusal_to_overwrite(tmp_path):
    sc.refuse_to_overwrite(str(tmp_path / "new"), force=False)
    (tmp_path / "empty").mkdir()
    sc.refuse_to_overwrite(str(tmp_path / "empty"), force=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(CorpusError, match="already exists and is not empty; pass --force"):
        sc.refuse_to_overwrite(str(tmp_path / "full"), force=False)
    sc.refuse_to_overwrite(str(tmp_path / "full"), force=True)
    (tmp_path / "file").write_text("x")
    os.symlink(str(tmp_path / "nowhere"), str(tmp_path / "link"))
    for name in ("file", "link"):
        with pytest.raises(CorpusError, match="exists and is not a folder"):
            sc.refuse_to_overwrite(str(tmp_path / name), force=True)


def test_a_finished_folder_replaces_the_old_one_and_nothing_is_left(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "a").write_text("new")
    sc._replace_folder(str(tmp_path / "new"), str(tmp_path / "out"))
    assert os.listdir(tmp_path) == ["out"] and (tmp_path / "out" / "a").read_text() == "new"
    (tmp_path / "newer").mkdir()
    (tmp_path / "newer" / "b").write_text("newer")
    sc._replace_folder(str(tmp_path / "newer"), str(tmp_path / "out"))
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["b"]


# ---------------------------------------------------------------------------------------- small builds


SMALL = CorpusSettings(sentences=3, voices=2, valid_sentences=1, test_sentences=1)


def test_one_utterance_is_written_with_its_record(tmp_path):
    job = sc.plan_jobs(CorpusSettings(sentences=3, voices=1, valid_sentences=1, test_sentences=1).resolved())[1]
    made = sc._MakeUtterance(str(tmp_path), edge_silence=800)(job)
    info = sf.info(str(tmp_path / "s0002_v01.flac"))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (16_000, 1, "PCM_16", "FLAC")
    assert made.num_samples == info.frames and type(made.num_samples) is int
    assert (made.split, made.utterance_id, made.sentence_id, made.voice_id) == ("valid", "s0002_v01", "s0002", "v01")
    assert made.words == job.sentence.words
    raw = synthesis.synthesise_raw(job.sentence.text, job.voice, job.noise_seed)
    utterance = synthesis.to_utterance(raw, 800)
    assert made.phones == " ".join(utterance.spoken)
    assert made.frame_labels == " ".join(synthesis.frame_labels(utterance.phone_starts, utterance.phones,
                                                                utterance.samples.size))
    audio, _ = sf.read(str(tmp_path / "s0002_v01.flac"), dtype="int16")
    assert (audio == utterance.samples).all() and not audio[:800].any() and not audio[-800:].any()


def test_one_worker_keeps_the_callers_thread_count_and_two_give_the_same_records(tmp_path):
    jobs = sc.plan_jobs(SMALL.resolved())[:3]
    make = sc._MakeUtterance(str(tmp_path), 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        alone = list(sc._map_jobs(make, jobs, 1))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    assert [r.utterance_id for r in alone] == [job.utterance_id for job in jobs]
    assert list(sc._map_jobs(make, jobs, 2)) == alone


class ThreadReport:
    """Picklable job runner that reports the worker's process id and torch thread count."""

    def __call__(self, job):
        return os.getpid(), torch.get_num_threads()


class ParentReport:
    def __call__(self, job):
        return os.getppid()


def test_workers_are_not_forks_of_the_caller():
    """They fork from multiprocessing's server process, which never ran the caller's torch code."""
    jobs = sc.plan_jobs(SMALL.resolved())
    assert os.getpid() not in set(sc._map_jobs(ParentReport(), jobs, 2))


def test_workers_are_that_many_single_threaded_processes(monkeypatch):
    jobs = sc.plan_jobs(CorpusSettings(sentences=12, voices=2, valid_sentences=1, test_sentences=1).resolved())
    pools = []
    monkeypatch.setattr(sc, "clean_worker_context", recording_worker_context(pools))
    assert {threads for _, threads in sc._map_jobs(ThreadReport(), jobs, 1)} == {1} and pools == []
    for workers in (2, 3):
        reports = list(sc._map_jobs(ThreadReport(), jobs, workers))
        assert len(reports) == len(jobs) and os.getpid() not in {pid for pid, _ in reports}
        assert {threads for _, threads in reports} == {1}  # every worker ran the initializer
    assert pools == [("laser_fairseq.data.synthetic_corpus", 2), ("laser_fairseq.data.synthetic_corpus", 3)]


def test_build_defaults_are_the_command_line_defaults():
    arguments = make_synthetic_corpus.parse_args(["--out", "x"])
    defaults = {name: p.default for name, p in inspect.signature(build_corpus).parameters.items()}
    assert defaults["progress_seconds"] == arguments.progress_seconds and defaults["force"] is arguments.force
    assert defaults["relative_root"] is arguments.relative_root is False
    assert defaults["workers"] == 1  # the command line uses 2 where there are 2 cores: same bytes either way
    settings = CorpusSettings()
    assert all(getattr(settings, name) == getattr(arguments, name) for name in settings.__dataclass_fields__)


def test_a_small_build_writes_every_file_and_logs_progress(tmp_path):
    out = str(tmp_path / "deeper" / "corpus")  # the parent folder is made too
    lines, start = [], time.monotonic()
    result = build_corpus(out, SMALL, progress_seconds=0.0, log=lines.append)
    assert result.out == out and result.utterances == 6 and 0 < result.seconds <= time.monotonic() - start
    assert lines[0].startswith("synthesising 6 utterances (3 sentences, 2 voices) with 1 worker(s) into ")
    temporary = lines[0].split(" into ")[1]  # built in a hidden sibling folder, renamed into place at the end
    assert os.path.dirname(temporary) == str(tmp_path / "deeper")
    assert os.path.basename(temporary).startswith(".corpus.tmp-")
    assert [line.split(" utterances")[0] for line in lines[1:]] == [f"synthesised {i}/6" for i in range(1, 7)]
    assert all(int(line.split(", ")[1].split()[0]) >= 6 for line in lines[1:])  # utterances/minute from the start
    audio = [f"audio/s000{s}_v0{v}.flac" for s in (1, 2, 3) for v in (1, 2)]
    tables = ["corpus.json", "dict.ltr.txt", "dict.phn.txt", "sentences.tsv", "voices.tsv"]
    side = [f"{split}.{suffix}" for split in SPLITS for suffix in ("tsv",) + sc.SIDE_FILES]
    assert all_files(out) == sorted(audio + tables + side)
    assert read_lines(out, "valid.voice") == ["v01", "v02"]
    assert read_lines(out, "valid.tsv")[0] == os.path.join(out, "audio")  # absolute, as wav2vec_manifest.py
    assert os.listdir(tmp_path / "deeper") == ["corpus"]
    quiet_lines = []
    other = str(tmp_path / "other")
    build_corpus(other, SMALL, progress_seconds=1e9, log=quiet_lines.append)
    assert len(quiet_lines) == 1
    assert contents(other) == {name: text.replace(out.encode(), other.encode()) for name, text in contents(out).items()}
    relative = [str(tmp_path / name) for name in ("relative_a", "relative_b")]
    for folder in relative:
        build_corpus(folder, SMALL, log=quiet, relative_root=True)
    assert read_lines(relative[0], "valid.tsv")[0] == "audio" and contents(relative[0]) == contents(relative[1])
    assert contents(relative[0]) == {name: text.replace(os.path.join(out, "audio").encode(), b"audio")
                                     for name, text in contents(out).items()}


def test_replacing_works_when_the_temporary_folder_is_on_another_filesystem(tmp_path, monkeypatch):
    """Every rename stays next to ``out``: none may go through $TMPDIR (often a tmpfs)."""
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's temporary folder")
    elsewhere = tempfile.mkdtemp(dir="/dev/shm")
    monkeypatch.setattr(tempfile, "tempdir", elsewhere)
    try:
        out = str(tmp_path / "corpus")
        build_corpus(out, SMALL, log=quiet)
        build_corpus(out, SMALL, force=True, log=quiet)
        assert os.listdir(tmp_path) == ["corpus"] and os.listdir(elsewhere) == []
    finally:
        shutil.rmtree(elsewhere)


class SteppingClock:
    """time.monotonic for build_corpus: every reading is 10 s after the previous one."""

    def __init__(self):
        self.now = 100.0

    def monotonic(self):
        self.now += 10.0
        return self.now


def test_progress_lines_follow_the_clock(tmp_path, monkeypatch):
    monkeypatch.setattr(sc, "time", SteppingClock())
    lines = []
    result = build_corpus(str(tmp_path / "a"), SMALL, progress_seconds=15.0, log=lines.append)
    # readings: start 110, then 120, 130, ... after each of the 6 utterances; a line once 15 s have passed
    assert lines[1:] == ["synthesised 2/6 utterances (33%), 6 utterances/minute",
                         "synthesised 4/6 utterances (67%), 6 utterances/minute",
                         "synthesised 6/6 utterances (100%), 6 utterances/minute"]
    assert result.seconds == 70.0
    default = []
    build_corpus(str(tmp_path / "b"), SMALL, log=default.append)  # every 10 s by default: each 10 s step counts
    assert len(default) == 1 + 6


def test_an_existing_corpus_is_only_replaced_with_force(tmp_path):
    out = str(tmp_path / "corpus")
    build_corpus(out, SMALL, log=quiet)
    before = contents(out)
    larger = CorpusSettings(sentences=4, voices=2, valid_sentences=1, test_sentences=1)
    with pytest.raises(CorpusError, match="already exists and is not empty; pass --force"):
        build_corpus(out, larger, log=quiet)
    assert contents(out) == before
    build_corpus(out, larger, force=True, log=quiet)
    assert len(read_lines(out, "train.tsv")) == 1 + 4
    assert os.listdir(tmp_path) == ["corpus"]  # no temporary or old folder left behind


def test_a_folder_that_appears_during_the_build_is_not_overwritten(tmp_path):
    out = str(tmp_path / "corpus")

    def someone_else_writes_there(message):
        if message.startswith("synthesising"):
            os.makedirs(out)
            with open(os.path.join(out, "theirs.txt"), "w") as handle:
                handle.write("keep me")

    with pytest.raises(CorpusError, match="already exists and is not empty"):
        build_corpus(out, SMALL, log=someone_else_writes_there)
    assert all_files(out) == ["theirs.txt"] and sorted(os.listdir(tmp_path)) == ["corpus"]


def test_an_interrupted_build_leaves_nothing_behind(tmp_path):
    out = str(tmp_path / "corpus")
    build_corpus(out, SMALL, log=quiet)
    before = all_files(out)
    lines = []

    def interrupt_on_first_progress_line(message):
        lines.append(message)
        if message.startswith("synthesised"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_corpus(out, CorpusSettings(sentences=5, voices=3, valid_sentences=1, test_sentences=1), force=True,
                     progress_seconds=0.0, log=interrupt_on_first_progress_line)
    assert lines[-1].startswith("synthesised 1/15")
    assert all_files(out) == before and os.listdir(tmp_path) == ["corpus"]


def test_voices_per_sentence_rotates_through_the_voices(tmp_path):
    out = str(tmp_path / "corpus")
    build_corpus(out, CorpusSettings(sentences=6, voices=3, voices_per_sentence=1, valid_sentences=1,
                                     test_sentences=1), log=quiet)
    voices = [voice for split in SPLITS for voice in read_lines(out, f"{split}.voice")]
    assert voices == ["v01", "v02", "v03", "v01", "v02", "v03"]


# -------------------------------------------------------------------------------------------- presets


def test_a_preset_is_a_build_of_given_sentences_and_voices_with_the_tools_own_utterances(tmp_path):
    sentences = tuple(draw_sentences(3, seed=1))
    voices = synthesis.VOICES[:2]

    def readme(preset, splits, records):
        return f"{preset.name}: {[s.sentence_id for s in splits['valid']]} {len(records)}\n"

    preset = sc.Preset(name="mini", sentences=sentences, voices=voices, valid_sentences=1, side_files=("wrd", "phn"),
                       readme=readme)
    lines = []
    result = sc.build_preset(str(tmp_path / "mini"), preset, progress_seconds=1e9, log=lines.append)
    assert result.utterances == 6 and len(lines) == 1
    assert lines[0].startswith("synthesising 6 utterances (preset mini: 3 sentences, 2 voices) with 1 worker(s) ")
    side = [f"{split}.{suffix}" for split in ("train", "valid") for suffix in ("tsv", "wrd", "phn")]
    audio = [f"audio/s000{s}_v0{v}.flac" for s in (1, 2, 3) for v in (1, 2)]
    assert all_files(result.out) == sorted(audio + side + ["README.md", "dict.ltr.txt", "voices.tsv"])
    assert read_lines(result.out, "README.md") == ["mini: ['s0003'] 6"]
    assert read_lines(result.out, "valid.tsv")[0] == "audio"
    assert [line.split("\t")[0] for line in read_lines(result.out, "train.tsv")[1:]] == [name[6:] for name in audio[:4]]
    # the same utterances, side files and tables as the tool's own corpus of these sentences (seed 1, 100 ms edges)
    tool = build_corpus(str(tmp_path / "tool"), CorpusSettings(sentences=3, voices=2, valid_sentences=1,
                                                               test_sentences=1), log=quiet, relative_root=True).out
    for name in audio + ["dict.ltr.txt", "voices.tsv"]:
        assert contents(result.out)[name] == contents(tool)[name], name
    for suffix in ("tsv", "wrd", "phn"):  # the tool's train + valid sentences are the preset's train, its test the valid
        tool_lines = {split: read_lines(tool, f"{split}.{suffix}") for split in SPLITS}
        skip = 1 if suffix == "tsv" else 0  # the root line
        assert read_lines(result.out, f"train.{suffix}")[skip:] == tool_lines["train"][skip:] + tool_lines["valid"][skip:]
        assert read_lines(result.out, f"valid.{suffix}") == tool_lines["test"]


def test_a_preset_splits_off_its_last_sentences_and_needs_both_splits():
    sentences = tuple(draw_sentences(4, seed=1))
    preset = sc.Preset(name="p", sentences=sentences, voices=synthesis.VOICES[:1], valid_sentences=3)
    assert preset.splits() == {"train": list(sentences[:1]), "valid": list(sentences[1:])}
    assert "README.md" not in preset.texts([])  # no readme function: no README
    assert (preset.seed, preset.edge_silence_ms, preset.side_files) == (1, 100, sc.SIDE_FILES)  # the tool's defaults
    for valid in (0, 4):
        with pytest.raises(CorpusError, match=f"--valid-sentences must be between 1 and 3 .*got {valid}"):
            sc.Preset(name="p", sentences=sentences, voices=synthesis.VOICES[:1], valid_sentences=valid).splits()


def test_preset_build_defaults_are_the_corpus_build_defaults():
    ours = {name: p.default for name, p in inspect.signature(sc.build_preset).parameters.items()}
    tools = {name: p.default for name, p in inspect.signature(build_corpus).parameters.items()}
    assert {name: ours[name] for name in ("workers", "force", "progress_seconds", "log")} == {
        name: tools[name] for name in ("workers", "force", "progress_seconds", "log")}
