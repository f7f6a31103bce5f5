"""scripts/prepare_librispeech.py on a small fake LibriSpeech tree made of the demo corpus' FLAC files."""

import glob
import inspect
import io
import locale
import multiprocessing
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from laser_fairseq.cli import prepare_librispeech
from laser_fairseq.data import prepare as prep
from laser_fairseq.data.manifest import read_manifest
from laser_fairseq.tasks.laser_task import LaserTask, LaserTaskConfig
from worker_pools import recording_worker_context
from laser_fairseq.checkout import REPO

DEMO = os.path.join(REPO, "manifests", "demo")
SCRIPT = os.path.join(REPO, "scripts", "prepare_librispeech.py")
SUBSET = "train-clean-100"

# file stem -> (fragment expected in its rejection reason)
BROKEN = {
    "19-198-0100": "cannot read audio file",  # corrupt bytes
    "19-198-0101": "sample rate is 8000 Hz",
    "19-198-0102": "2 channels",
    "19-198-0103": "empty",
    "19-198-0104": "all silence",
    "19-198-0105": "NaN or infinite",  # a float wav
    "19-198-0106": "too short",
    "19-198-0107": "no line for 19-198-0107",  # good audio, transcript line missing
    "19-198-0108": "cannot read audio file",  # zero-byte file
}


def demo_utterances():
    """(path, words) of the demo corpus' training files."""
    with open(os.path.join(DEMO, "train.tsv")) as handle:
        names = [line.split("\t")[0] for line in handle.read().splitlines()[1:]]
    with open(os.path.join(DEMO, "train.wrd")) as handle:
        words = handle.read().splitlines()
    return [(os.path.join(DEMO, "audio", name), text) for name, text in zip(names, words)]


def write_chapter(root, speaker, chapter, files, transcripts):
    """Copy/write ``files`` (stem -> writer) into SUBSET/speaker/chapter with a trans.txt of ``transcripts``."""
    folder = os.path.join(root, SUBSET, str(speaker), str(chapter))
    os.makedirs(folder, exist_ok=True)
    for stem, write in files.items():
        write(folder, stem)
    with open(os.path.join(folder, f"{speaker}-{chapter}.trans.txt"), "w") as handle:
        handle.writelines(f"{stem} {text}\n" for stem, text in transcripts.items())


def copy_of(source):
    return lambda folder, stem: shutil.copy(source, os.path.join(folder, f"{stem}.flac"))


def written(samples, rate=16_000, ext="flac", subtype=None):
    def write(folder, stem):
        sf.write(os.path.join(folder, f"{stem}.{ext}"), samples, rate, subtype=subtype)

    return write


def raw_bytes(data):
    def write(folder, stem):
        with open(os.path.join(folder, f"{stem}.flac"), "wb") as handle:
            handle.write(data)

    return write


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """root of the fake tree and {stem: words} of the good files."""
    root = str(tmp_path_factory.mktemp("LibriSpeech"))
    utterances = demo_utterances()
    good = {}
    for number, (speaker, chapter) in enumerate([(103, 1240), (103, 1241), (1034, 121119)]):
        chapter_files = {}
        for index in range(4):
            source, words = utterances[4 * number + index]
            stem = f"{speaker}-{chapter}-{index:04d}"
            chapter_files[stem] = copy_of(source)
            good[stem] = words
        write_chapter(root, speaker, chapter, chapter_files, {s: good[s] for s in chapter_files})
    wav, _ = sf.read(utterances[0][0], dtype="float32")
    nan_wav = wav.copy()
    nan_wav[100] = np.nan
    with open(utterances[1][0], "rb") as handle:
        corrupt = handle.read(64) + bytes(range(256)) * 8
    broken = {
        "19-198-0100": raw_bytes(corrupt),
        "19-198-0101": written(wav[::2], rate=8000),
        "19-198-0102": written(np.stack([wav, wav], axis=1)),
        "19-198-0103": written(np.zeros((0, 1), dtype=np.float32), ext="wav"),  # libsndfile cannot reopen a 0-frame FLAC
        "19-198-0104": written(np.zeros(16000, dtype=np.float32)),
        "19-198-0105": written(nan_wav, ext="wav", subtype="FLOAT"),
        "19-198-0106": written(wav[8000 : 8000 + 3000]),
        "19-198-0107": copy_of(utterances[0][0]),
        "19-198-0108": raw_bytes(b""),
    }
    transcripts = {stem: "SOME WORDS" for stem in broken if stem != "19-198-0107"}
    transcripts["19-198-0199"] = "A LINE WITHOUT AUDIO"
    write_chapter(root, 19, 198, broken, transcripts)
    return root, good


def run_prepare(root, dest, log=None, **options):
    options.setdefault("subsets", [SUBSET])
    options.setdefault("extensions", ["flac", "wav"])
    messages = [] if log is None else log
    return prep.prepare(root, str(dest), log=messages.append, **options), messages


def read_lines(path):
    with open(path) as handle:
        return handle.read().splitlines()


def test_manifests_list_every_good_file_sorted_with_absolute_root(corpus, tmp_path):
    root, good = corpus
    result, _ = run_prepare(root, tmp_path, valid_percent=0.0)
    lines = read_lines(tmp_path / "train.tsv")
    assert lines[0] == root and os.path.isabs(lines[0])
    paths = [line.split("\t")[0] for line in lines[1:]]
    assert paths == sorted(paths)
    assert sorted(os.path.basename(p)[:-5] for p in paths) == sorted(good)
    for line in lines[1:]:
        relative, count = line.split("\t")
        assert relative.startswith(f"{SUBSET}/")
        assert int(count) == sf.info(os.path.join(root, relative)).frames
    assert not (tmp_path / "valid.tsv").exists()
    assert len(result.train) == len(good) and result.valid == []


def test_transcripts_are_aligned_with_the_manifest_lines(corpus, tmp_path):
    root, good = corpus
    run_prepare(root, tmp_path, valid_percent=0.25, seed=3)
    for split in ("train", "valid"):
        paths = [line.split("\t")[0] for line in read_lines(tmp_path / f"{split}.tsv")[1:]]
        words = read_lines(tmp_path / f"{split}.wrd")
        ltr = read_lines(tmp_path / f"{split}.ltr")
        assert len(paths) == len(words) == len(ltr) > 0
        for path, text, letters in zip(paths, words, ltr):
            assert text == good[os.path.basename(path)[:-5]]
            assert letters == " ".join(text.replace(" ", "|")) + " |"
    symbols = [line.split()[0] for line in read_lines(tmp_path / "dict.ltr.txt")]
    all_letters = {s for split in ("train", "valid") for line in read_lines(tmp_path / f"{split}.ltr") for s in line.split()}
    assert set(symbols) == all_letters and symbols[0] == "|"


def test_letters_follow_fairseq_libri_labels():
    assert prep.letters("HELLO WORLD") == "H E L L O | W O R L D |"
    assert prep.letter_dictionary(["A B |", "B |"]) == "B 2\n| 2\nA 1\n"


def test_every_broken_file_is_rejected_with_its_reason(corpus, tmp_path):
    root, _ = corpus
    log = []
    result, _ = run_prepare(root, tmp_path, log=log, valid_percent=0.0)
    reasons = {os.path.splitext(os.path.basename(r.path))[0]: r.reason for r in result.rejected}
    assert set(reasons) == set(BROKEN)
    for stem, fragment in BROKEN.items():
        assert fragment in reasons[stem], (stem, reasons[stem])
    rows = [line.split("\t") for line in read_lines(tmp_path / "rejected.tsv")]
    assert rows[0] == ["path", "reason"]
    assert {(path, reason) for path, reason in rows[1:]} == {(r.path, r.reason) for r in result.rejected}
    for rejection in result.rejected:
        assert any(rejection.path in message and rejection.reason in message for message in log)
    assert any("checked 21/21 files (100.0%), 9 rejected" in message for message in log)
    assert any("warning: 1 transcript line(s) have no audio file, e.g. 19-198-0199" in message for message in log)


def test_same_seed_same_output_and_parallel_workers_agree(corpus, tmp_path):
    root, _ = corpus
    run_prepare(root, tmp_path / "a", valid_percent=0.3, seed=7)
    run_prepare(root, tmp_path / "b", valid_percent=0.3, seed=7, workers=2)
    run_prepare(root, tmp_path / "c", valid_percent=0.3, seed=8)
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "valid.tsv").read_bytes() != (tmp_path / "c" / "valid.tsv").read_bytes()


def test_the_laser_task_manifest_reader_accepts_the_output(corpus, tmp_path):
    root, good = corpus
    run_prepare(root, tmp_path, valid_percent=0.25)
    train, valid = read_manifest(str(tmp_path / "train.tsv")), read_manifest(str(tmp_path / "valid.tsv"))
    assert len(train) + len(valid) == len(good)
    assert all(os.path.isfile(entry.path) for entry in train.entries + valid.entries)
    task = LaserTask(LaserTaskConfig(data=str(tmp_path), seed=1, train_subset="train"))
    task.load_dataset("train")
    item = task.datasets["train"][0]
    assert item["view_a"].ndim == 1 and item["view_b"].numel() > 0


def test_existing_manifests_are_kept_without_force(corpus, tmp_path):
    root, _ = corpus
    run_prepare(root, tmp_path, valid_percent=0.25)
    before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}
    with pytest.raises(prep.PrepareError, match="--force"):
        run_prepare(root, tmp_path, valid_percent=0.0)
    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == before
    run_prepare(root, tmp_path, valid_percent=0.0, force=True)
    assert not (tmp_path / "valid.tsv").exists() and not (tmp_path / "valid.wrd").exists()
    assert sorted(os.listdir(tmp_path)) == ["dict.ltr.txt", "rejected.tsv", "train.ltr", "train.tsv", "train.wrd"]


def test_a_failed_write_leaves_the_destination_untouched(corpus, tmp_path, monkeypatch):
    root, _ = corpus
    (tmp_path / "train.tsv").write_text("old\n")
    texts = {"train.tsv": "new\n", "valid.tsv": "new\n"}
    real_open = open

    def failing_open(path, mode="r", *args, **kwargs):
        if "valid.tsv" in str(path) and "w" in mode:
            raise OSError("disk full")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", failing_open)
    with pytest.raises(OSError, match="disk full"):
        prep.write_atomically(str(tmp_path), texts)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["train.tsv"] and (tmp_path / "train.tsv").read_text() == "old\n"


def test_a_plain_folder_gets_manifests_without_transcripts(corpus, tmp_path):
    folder = tmp_path / "wavs" / "nested"
    folder.mkdir(parents=True)
    for source, _ in demo_utterances()[:3]:
        wav, rate = sf.read(source)
        sf.write(str(folder / (os.path.basename(source)[:-5] + ".wav")), wav, rate)
    log = []
    result, _ = run_prepare(str(tmp_path / "wavs"), tmp_path / "out", log=log, subsets=[], extensions=["wav"], valid_percent=0.0)
    assert sorted(os.listdir(tmp_path / "out")) == ["rejected.tsv", "train.tsv"]
    assert not result.has_transcripts and len(result.train) == 3
    assert any("no .wrd/.ltr" in message for message in log)
    assert read_lines(tmp_path / "out" / "train.tsv")[1].startswith("nested/s01_v1.wav\t")


def test_min_samples_below_the_cnn_receptive_field_is_refused(corpus, tmp_path):
    with pytest.raises(prep.PrepareError, match="receptive field"):
        run_prepare(corpus[0], tmp_path, min_samples=100)


def test_cli_reports_progress_rejections_and_exit_codes(corpus, tmp_path, capsys):
    root, good = corpus
    arguments = [root, "--subsets", SUBSET, "--dest", str(tmp_path), "--ext", "flac", "wav", "--progress-every", "5"]
    done = subprocess.run([sys.executable, SCRIPT] + arguments + ["--workers", "1"], capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "checked 5/21 files (23.8%)" in done.stderr and "checked 21/21 files (100.0%)" in done.stderr
    assert done.stderr.count("rejected /") == len(BROKEN)
    assert f"wrote {len(good) - 1} train and 1 valid utterances" in done.stderr
    cli = prepare_librispeech
    assert cli.main(arguments) == 1 and "--force" in capsys.readouterr().err
    assert cli.main([root, "--subsets", "no-such-subset", "--dest", str(tmp_path / "x")]) == 1
    assert "no-such-subset: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------ the pieces, in process


def test_a_file_is_checked_to_its_sample_count(corpus):
    root, _ = corpus
    folder = os.path.join(root, SUBSET, "19", "198")
    stereo = os.path.join(folder, "19-198-0102.flac")
    number, reason = prep.check_audio_file(stereo, 16_000, 8_000)
    assert number == sf.info(stereo).frames > 0 and "2 channels" in reason
    low_rate = os.path.join(folder, "19-198-0101.flac")
    assert prep.check_audio_file(low_rate, 16_000, 8_000)[0] == sf.info(low_rate).frames > 0
    short = os.path.join(folder, "19-198-0106.flac")
    assert prep.check_audio_file(short, 16_000, 8_000) == (
        3_000, "too short: 3000 samples, fewer than --min-samples 8000")
    assert prep.check_audio_file(short, 16_000, 3_000) == (3_000, "")
    number, reason = prep.check_audio_file(os.path.join(folder, "19-198-0100.flac"), 16_000, 8_000)
    assert number == 0 and reason.startswith("cannot read audio file")


def test_only_the_given_subsets_and_extensions_are_collected(tmp_path):
    for relative in ("train-clean-100/1/2/a.flac", "train-clean-100/1/2/b.FLAC", "train-clean-100/1/2/c.wav",
                     "dev-clean/3/4/d.flac", "e.flac"):
        os.makedirs(os.path.dirname(tmp_path / relative), exist_ok=True)
        (tmp_path / relative).write_bytes(b"")
    root = str(tmp_path)
    assert prep.find_audio_files(root, ["train-clean-100"], [".flac"]) == [
        "train-clean-100/1/2/a.flac", "train-clean-100/1/2/b.FLAC"]
    assert prep.find_audio_files(root, ["dev-clean", "train-clean-100"], ["wav"]) == ["train-clean-100/1/2/c.wav"]
    assert prep.find_audio_files(root, [], ["FLAC"]) == [
        "dev-clean/3/4/d.flac", "e.flac", "train-clean-100/1/2/a.flac", "train-clean-100/1/2/b.FLAC"]
    with pytest.raises(prep.PrepareError, match="test-other: no such folder"):
        prep.find_audio_files(root, ["train-clean-100", "test-other"], ["flac"])


def test_transcripts_are_found_and_read(tmp_path):
    assert not prep.has_librispeech_transcripts(str(tmp_path), [])
    assert prep.has_librispeech_transcripts(str(tmp_path), ["train-clean-100"])  # subsets: LibriSpeech layout
    chapter = tmp_path / "1" / "2"
    chapter.mkdir(parents=True)
    (chapter / "1-2.trans.txt").write_bytes("1-2-0000 CAFÉ  au lait\n\n1-2-0001\n1-2-0002 NAÏVE\n".encode("utf-8"))
    assert prep.has_librispeech_transcripts(str(tmp_path), [])
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # an ASCII locale: transcripts are UTF-8 whatever the locale says
    try:
        assert prep.read_transcripts(str(chapter)) == {"1-2-0000": "CAFÉ AU LAIT", "1-2-0001": "", "1-2-0002": "NAÏVE"}
        cache = {}
        assert prep.transcript_problem("1/2/1-2-0000.flac", str(tmp_path), cache) == ("CAFÉ AU LAIT", "")
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)
    words, problem = prep.transcript_problem("1/2/1-2-0001.flac", str(tmp_path), cache)
    assert (words, problem.startswith("empty transcript for 1-2-0001")) == ("", True)
    words, problem = prep.transcript_problem("1/2/1-2-0009.flac", str(tmp_path), cache)
    assert (words, problem.startswith("no transcript: no line for 1-2-0009")) == ("", True)
    (tmp_path / "3").mkdir()
    words, problem = prep.transcript_problem("3/x.flac", str(tmp_path), cache)
    assert (words, "holds no *.trans.txt file" in problem) == ("", True)


def test_dictionary_ties_are_ordered_by_symbol():
    assert prep.letter_dictionary(["B A", "A B C"]) == "A 2\nB 2\nC 1\n"


def utterance_list(count):
    return [prep.Utterance(f"u{index:03d}.flac", 16_000, None) for index in range(count)]


def test_the_valid_split_is_a_seeded_fraction_with_at_least_one_file():
    def sizes(count, percent, seed=1):
        train, valid = prep.split_train_valid(utterance_list(count), percent, seed)
        assert sorted(u.relative_path for u in train + valid) == [u.relative_path for u in utterance_list(count)]
        assert train == sorted(train, key=lambda u: u.relative_path)
        return len(train), len(valid)

    assert sizes(100, 0.05) == (95, 5) and sizes(10, 0.01) == (9, 1) and sizes(2, 0.01) == (1, 1)
    assert sizes(1, 0.01) == (1, 0) and sizes(10, 0.0) == (10, 0) and sizes(10, 0.999) == (0, 10)
    for bad in (1.0, 1.5, -0.1):
        with pytest.raises(prep.PrepareError, match="--valid-percent must be a fraction in"):
            prep.split_train_valid(utterance_list(10), bad, 1)
    valid_by_seed = {seed: prep.split_train_valid(utterance_list(50), 0.1, seed)[1] for seed in (1, 2)}
    assert valid_by_seed[1] != valid_by_seed[2]


def test_any_output_already_in_dest_is_refused_and_stale_ones_go(tmp_path):
    for name in prep.all_output_names():
        dest = tmp_path / name.replace(".", "_")
        dest.mkdir()
        (dest / name).write_text("x")
        with pytest.raises(prep.PrepareError, match=f"already holds {name}; pass --force"):
            prep.refuse_to_overwrite(str(dest), force=False)
    assert sorted(prep.all_output_names()) == sorted([
        "train.tsv", "valid.tsv", "rejected.tsv", "dict.ltr.txt", "train.wrd", "train.ltr", "valid.wrd", "valid.ltr"]
        + [f"{split}.{ext}" for split in ("dev_clean", "dev_other", "test_clean", "test_other")
           for ext in ("tsv", "wrd", "ltr")])
    dest = tmp_path / "out"
    written = prep.write_atomically(str(dest), {name: f"{name}\n" for name in prep.all_output_names()})
    assert sorted(written) == sorted(str(dest / name) for name in prep.all_output_names())
    assert prep.write_atomically(str(dest), {"train.tsv": "é\n"}) == [str(dest / "train.tsv")]
    assert os.listdir(dest) == ["train.tsv"] and (dest / "train.tsv").read_bytes() == "é\n".encode("utf-8")


def test_outputs_are_written_next_to_each_other_not_in_the_working_folder(tmp_path, monkeypatch):
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()  # a working folder that no longer exists: nothing may be written there
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # an ASCII locale: outputs are UTF-8 whatever the locale says
    try:
        prep.write_atomically(str(tmp_path / "out"), {"train.wrd": "CAFÉ\n"})
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)
    assert (tmp_path / "out" / "train.wrd").read_bytes() == "CAFÉ\n".encode("utf-8")


class FlushCounter(io.StringIO):
    flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


def test_log_lines_go_to_stderr_at_once(monkeypatch):
    from laser_fairseq.data import synthetic_corpus

    for log in (prep.log_to_stderr, synthetic_corpus.log_to_stderr):
        stream = FlushCounter()
        monkeypatch.setattr(sys, "stderr", stream)
        log("checked 1/2 files")
        assert stream.getvalue() == "checked 1/2 files\n" and stream.flushes >= 1


def test_progress_lines():
    assert prep.progress_line(5, 21, 2) == "checked 5/21 files (23.8%), 2 rejected"
    assert prep.progress_line(0, 0, 0) == "checked 0/0 files (100.0%), 0 rejected"


def make_wavs(folder, count, samples=8_000):
    folder.mkdir(parents=True, exist_ok=True)
    tone = (0.1 * np.sin(np.arange(samples) / 5)).astype(np.float32)
    for index in range(count):
        sf.write(str(folder / f"f{index}.wav"), tone, 16_000)


def test_check_corpus_logs_every_n_files_and_keeps_absolute_rejections(tmp_path):
    make_wavs(tmp_path / "wavs", 5)
    sf.write(str(tmp_path / "wavs" / "f2.wav"), np.zeros(8_000, np.float32), 16_000)
    log = []
    relative = prep.find_audio_files(str(tmp_path), [], ["wav"])
    accepted, rejected = prep.check_corpus(str(tmp_path), relative, False, 16_000, 8_000, 1, 2, log.append)
    assert [u.words for u in accepted] == [None] * 4 and [u.num_samples for u in accepted] == [8_000] * 4
    assert [r.path for r in rejected] == [str(tmp_path / "wavs" / "f2.wav")]
    assert [line for line in log if line.startswith("checked")] == [
        "checked 2/5 files (40.0%), 0 rejected", "checked 4/5 files (80.0%), 1 rejected",
        "checked 5/5 files (100.0%), 1 rejected"]


def test_workers_run_in_a_pool_of_that_size_and_one_runs_in_process(tmp_path, monkeypatch):
    make_wavs(tmp_path / "wavs", 20)
    paths = [str(tmp_path / "wavs" / f"f{index}.wav") for index in range(20)]
    check = prep._Check(sample_rate=16_000, min_samples=8_000)
    pools = []
    monkeypatch.setattr(prep, "clean_worker_context", recording_worker_context(pools))
    assert list(prep._map_files(check, paths, 1)) == [(8_000, "")] * 20 and pools == []
    assert list(prep._map_files(check, paths, 2)) == [(8_000, "")] * 20
    assert list(prep._map_files(check, paths[:3], 3)) == [(8_000, "")] * 3
    assert pools == [("laser_fairseq.data.prepare", 2), ("laser_fairseq.data.prepare", 3)]
    assert multiprocessing.active_children() == []  # every pool was closed


def test_prepare_by_default_checks_in_process_splits_with_seed_1_and_logs_every_1000_files(tmp_path, monkeypatch):
    make_wavs(tmp_path / "wavs", 1_001, samples=400)
    pools = []
    monkeypatch.setattr(prep, "clean_worker_context", lambda module: pools.append(module))
    log = []
    result = prep.prepare(str(tmp_path / "wavs"), str(tmp_path / "out"), extensions=["wav"], min_samples=400,
                          log=log.append)
    assert pools == []  # one worker: no pool
    assert [line for line in log if line.startswith("checked")] == [
        "checked 1000/1001 files (99.9%), 0 rejected", "checked 1001/1001 files (100.0%), 0 rejected"]
    accepted = sorted(result.train + result.valid, key=lambda u: u.relative_path)  # the order split sees
    assert len(result.valid) == 10 and result.valid == prep.split_train_valid(accepted, 0.01, 1)[1]
    assert result.valid != prep.split_train_valid(accepted, 0.01, 2)[1]


def test_prepare_defaults_are_the_command_line_defaults():
    cli = prepare_librispeech
    arguments = cli.parse_args(["root", "--dest", "out"])
    defaults = {name: p.default for name, p in inspect.signature(prep.prepare).parameters.items()}
    assert defaults["valid_percent"] == arguments.valid_percent and defaults["seed"] == arguments.seed
    assert defaults["min_samples"] == arguments.min_samples and list(defaults["extensions"]) == arguments.ext
    assert defaults["sample_rate"] == arguments.sample_rate and defaults["progress_every"] == arguments.progress_every
    assert defaults["force"] is False and defaults["workers"] == 1 and list(defaults["subsets"]) == arguments.subsets


def test_the_receptive_field_itself_is_accepted_and_subsets_imply_transcripts(tmp_path):
    make_wavs(tmp_path / "train-clean-100" / "1" / "2", 2, samples=400)
    with pytest.raises(prep.PrepareError, match="all 2 files were rejected"):  # no *.trans.txt: no transcript
        prep.prepare(str(tmp_path), str(tmp_path / "out"), subsets=["train-clean-100"], extensions=["wav"],
                     min_samples=400, log=lambda message: None)
    result = prep.prepare(str(tmp_path), str(tmp_path / "out"), extensions=["wav"], min_samples=400,
                          log=lambda message: None)
    assert [u.num_samples for u in result.train + result.valid] == [400, 400]


# ------------------------------------------------------------------------------- evaluation subsets (CTC, SUPERB)


@pytest.fixture(scope="module")
def with_eval_subsets(tmp_path_factory):
    """A LibriSpeech-layout root: train-clean-100 (8 files) and dev/test clean/other (2 files each, plus one
    too-short file in dev-other); returns the root and {subset: {stem: words}} of the good files."""
    root = str(tmp_path_factory.mktemp("LibriSpeechEval"))
    utterances = demo_utterances()
    good = {}
    subsets = [SUBSET] + list(prep.LIBRISPEECH_EVAL_SUBSETS)
    for number, subset in enumerate(subsets):
        speaker, chapter = 200 + number, 10
        count = 8 if subset == SUBSET else 2
        folder = os.path.join(root, subset, str(speaker), str(chapter))
        os.makedirs(folder)
        good[subset] = {}
        lines = []
        for index in range(count):
            source, words = utterances[(3 * number + index) % len(utterances)]
            stem = f"{speaker}-{chapter}-{index:04d}"
            shutil.copy(source, os.path.join(folder, f"{stem}.flac"))
            good[subset][stem] = words
            lines.append(f"{stem} {words}\n")
        if subset == "dev-other":
            wav, _ = sf.read(utterances[0][0], dtype="float32")
            speech = wav[8000 : 8000 + 1000]  # from the middle: the file's edges are silence
            sf.write(os.path.join(folder, f"{speaker}-{chapter}-0099.flac"), speech, 16_000)
            lines.append(f"{speaker}-{chapter}-0099 TOO SHORT\n")
        with open(os.path.join(folder, f"{speaker}-{chapter}.trans.txt"), "w") as handle:
            handle.writelines(lines)
    return root, good


def test_eval_subsets_become_whole_named_splits_with_transcripts(with_eval_subsets, tmp_path):
    root, good = with_eval_subsets
    log = []
    result, _ = run_prepare(root, tmp_path, log=log, valid_percent=0.25,
                            eval_subsets=list(prep.LIBRISPEECH_EVAL_SUBSETS))
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["dict.ltr.txt", "rejected.tsv"] + [f"{split}.{ext}" for split in
                                             ("train", "valid", "dev_clean", "dev_other", "test_clean", "test_other")
                                             for ext in ("tsv", "wrd", "ltr")])
    assert (len(result.train), len(result.valid)) == (6, 2)  # valid comes from --subsets only
    assert sorted(os.path.basename(u.relative_path)[:-5] for u in result.train + result.valid) == sorted(good[SUBSET])
    for subset in prep.LIBRISPEECH_EVAL_SUBSETS:
        split = subset.replace("-", "_")
        lines = read_lines(tmp_path / f"{split}.tsv")
        assert lines[0] == root
        paths = [line.split("\t")[0] for line in lines[1:]]
        assert all(path.startswith(f"{subset}/") for path in paths)
        assert [os.path.basename(path)[:-5] for path in paths] == sorted(good[subset])  # all of it, sorted
        assert read_lines(tmp_path / f"{split}.wrd") == [good[subset][os.path.basename(p)[:-5]] for p in paths]
        assert read_lines(tmp_path / f"{split}.ltr") == [prep.letters(w) for w in read_lines(tmp_path / f"{split}.wrd")]
        assert [u.relative_path for u in result.evaluation[split]] == paths
    rejected = read_lines(tmp_path / "rejected.tsv")[1:]
    assert len(rejected) == 1 and "dev-other" in rejected[0] and "too short" in rejected[0]
    assert any("checked 17/17 files" in line for line in log)
    symbols = {line.split()[0] for line in read_lines(tmp_path / "dict.ltr.txt")}
    assert symbols == {s for split in ("train", "valid") for line in read_lines(tmp_path / f"{split}.ltr")
                       for s in line.split()}  # the dictionary is fixed by the training splits


def test_the_ctc_config_finds_its_splits(with_eval_subsets, tmp_path):
    """examples/ctc/config/hubert_base_100h.yaml's train_subset / valid_subset are files the script writes."""
    import yaml

    with open(os.path.join(REPO, "examples", "ctc", "config", "hubert_base_100h.yaml")) as handle:
        config = yaml.safe_load(handle)
    root, _ = with_eval_subsets
    run_prepare(root, tmp_path, eval_subsets=["dev-other"])
    labels = config["task"]["labels"]
    for split in (config["dataset"]["train_subset"], config["dataset"]["valid_subset"]):
        assert (tmp_path / f"{split}.tsv").is_file() and (tmp_path / f"{split}.{labels}").is_file()
    assert (tmp_path / f"dict.{labels}.txt").is_file()
    from fairseq_tasks import audio_finetuning_split

    dataset = audio_finetuning_split(str(tmp_path), "dev_other", labels)  # fairseq's own reader
    assert len(dataset) == 2 and dataset[0]["label"].numel() > 0


@pytest.mark.parametrize("subsets, eval_subsets, message", [
    ([], ["dev-clean"], "--eval-subsets needs --subsets"),
    ([SUBSET], [SUBSET], "given in both --subsets and --eval-subsets"),
    ([SUBSET], ["dev-clean", "dev_clean"], "clashes"),
    ([SUBSET], ["train"], "clashes"),
    ([SUBSET], ["no-such"], "no-such: no such folder"),
])
def test_bad_eval_subsets_are_refused_and_nothing_is_written(with_eval_subsets, tmp_path, subsets, eval_subsets,
                                                             message):
    root, _ = with_eval_subsets
    with pytest.raises(prep.PrepareError, match=message):
        run_prepare(root, tmp_path / "out", subsets=subsets, eval_subsets=eval_subsets)
    assert not (tmp_path / "out").exists()


def test_eval_outputs_are_refused_without_force_and_stale_ones_go(with_eval_subsets, tmp_path):
    root, _ = with_eval_subsets
    run_prepare(root, tmp_path, eval_subsets=["dev-clean", "test-other"])
    with pytest.raises(prep.PrepareError, match="--force"):
        run_prepare(root, tmp_path, eval_subsets=["dev-other"])
    (tmp_path / "train.tsv").unlink()
    with pytest.raises(prep.PrepareError, match="dev_clean.tsv"):  # LibriSpeech's eval outputs always count
        run_prepare(root, tmp_path)
    run_prepare(root, tmp_path, eval_subsets=["dev-other"], force=True)
    assert not (tmp_path / "dev_clean.tsv").exists() and not (tmp_path / "test_other.ltr").exists()
    assert (tmp_path / "dev_other.ltr").exists()


def test_cli_writes_eval_subsets(with_eval_subsets, tmp_path):
    root, _ = with_eval_subsets
    done = subprocess.run([sys.executable, SCRIPT, root, "--subsets", SUBSET, "--dest", str(tmp_path),
                           "--eval-subsets", "dev-clean", "dev-other", "--workers", "1"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "wrote 8 train and 0 valid" not in done.stderr
    assert ", 2 dev_clean, 2 dev_other to " in done.stderr
    assert (tmp_path / "dev_clean.ltr").is_file() and (tmp_path / "dev_other.wrd").is_file()


def test_split_names_of_eval_subsets_and_the_names_refused():
    assert prep.split_name("dev-other") == "dev_other" and prep.split_name("/test-clean/") == "test_clean"
    for eval_subsets in (["valid"], ["train"], ["/"], ["dev-clean/extra"], ["dev-clean", "dev_clean"]):
        with pytest.raises(prep.PrepareError, match="clashes with train, valid or another evaluation subset"):
            prep.check_eval_subsets([SUBSET], eval_subsets)
    prep.check_eval_subsets([SUBSET], ["dev-clean/", "my-eval"])  # plain folder names pass


def test_when_every_training_file_is_rejected_the_error_names_the_first_of_them(with_eval_subsets, tmp_path):
    root, good = with_eval_subsets
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    short = np.zeros(1000, dtype=np.float32)
    short[::7] = 0.1  # audible, but too short
    train_files = sorted(glob.glob(str(copy / SUBSET / "*" / "*" / "*.flac")))
    for path in train_files:
        sf.write(path, short, 16_000)
    with pytest.raises(prep.PrepareError) as refused:
        run_prepare(str(copy), tmp_path / "out", eval_subsets=["dev-other", "dev-clean"])
    message = str(refused.value)
    assert f"all {len(train_files)} files were rejected, nothing written; first reason: {train_files[0]}: too short" \
        in message
    assert not (tmp_path / "out").exists()


def test_outputs_of_a_named_eval_subset_are_refused_without_force(with_eval_subsets, tmp_path):
    """An evaluation subset outside LibriSpeech's four (``my-eval``): its outputs count as this tool's, like
    LibriSpeech's, and are kept without --force."""
    root = tmp_path / "LibriSpeech"
    shutil.copytree(with_eval_subsets[0], root)
    shutil.copytree(root / "dev-clean", root / "my-eval")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "my_eval.tsv").write_text("/elsewhere\n")
    with pytest.raises(prep.PrepareError, match=r"already holds my_eval\.tsv; pass --force"):
        run_prepare(str(root), dest, eval_subsets=["my-eval"])
    assert (dest / "my_eval.tsv").read_text() == "/elsewhere\n"
    result, _ = run_prepare(str(root), dest, eval_subsets=["my-eval"], force=True)
    assert read_lines(dest / "my_eval.tsv")[0] == str(root) and len(result.evaluation["my_eval"]) == 2
    assert prep.split_name("Xtra-clean/") == "Xtra_clean"  # only slashes are stripped from a subset's ends
