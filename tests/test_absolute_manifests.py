"""Manifests our corpus tools write are read unchanged by fairseq's own tasks from any working directory;
scripts/absolute_manifests.py makes absolute copies of relative (portable) ones."""

import contextlib
import locale
import os
import shutil
import subprocess
import sys

import pytest

from fairseq_tasks import audio_finetuning_split, hubert_pretraining_split
from laser_fairseq.data.manifest import ManifestError, read_manifest, write_absolute_copies
from laser_fairseq.data.synthetic_corpus import CorpusSettings, build_corpus
from laser_fairseq.checkout import REPO

DEMO = os.path.join(REPO, "manifests", "demo")
SCRIPT = os.path.join(REPO, "scripts", "absolute_manifests.py")
TINY = CorpusSettings(sentences=3, voices=2, valid_sentences=1, test_sentences=1)


def quiet(message):
    pass


def first_line(path):
    with open(path, encoding="utf-8") as handle:
        return handle.readline().rstrip("\n")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """A tiny synthetic corpus as the tool writes it (absolute root) and one with --relative-root."""
    base = tmp_path_factory.mktemp("corpora")
    absolute, relative = str(base / "absolute"), str(base / "relative")
    build_corpus(absolute, TINY, log=quiet)
    build_corpus(relative, TINY, log=quiet, relative_root=True)
    return absolute, relative


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a working directory that is neither the corpus' nor the repository's."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def test_fairseq_tasks_read_the_corpus_tool_output_from_another_directory(corpora, elsewhere):
    corpus = corpora[0]
    assert os.path.isabs(first_line(os.path.join(corpus, "train.tsv")))
    finetuning = audio_finetuning_split(corpus, "valid", "ltr")
    assert len(finetuning) == 2 and finetuning[0]["source"].numel() > 0 and finetuning[0]["label"].numel() > 0
    pretraining = hubert_pretraining_split(corpus, "train", ("phn",), 50.0)
    assert len(pretraining) == 2 and pretraining[0]["source"].numel() > 0
    assert len(pretraining[0]["label_list"][0]) > 0
    assert os.listdir(elsewhere) == []  # nothing written into the working directory


def test_relative_manifests_fail_in_fairseq_and_their_absolute_copies_load(corpora, elsewhere, tmp_path):
    relative = corpora[1]
    assert first_line(os.path.join(relative, "valid.tsv")) == "audio"
    with pytest.raises(Exception):  # fairseq joins "audio" with the working directory
        audio_finetuning_split(relative, "valid", "ltr")[0]
    assert len(read_manifest(os.path.join(relative, "valid.tsv"))) == 2  # the project's reader resolves it
    copies = str(tmp_path / "copies")
    written = write_absolute_copies(relative, copies)
    expected = sorted(f"{split}.{ext}" for split in ("train", "valid", "test")
                      for ext in ("tsv", "wrd", "ltr", "sent", "voice", "phones", "phn"))
    assert sorted(os.path.basename(path) for path in written) == sorted(expected + ["dict.ltr.txt", "dict.phn.txt"])
    for split in ("train", "valid", "test"):
        with open(os.path.join(relative, f"{split}.tsv")) as a, open(os.path.join(copies, f"{split}.tsv")) as b:
            source, copy = a.read().splitlines(), b.read().splitlines()
        assert copy[0] == os.path.join(relative, "audio") and copy[1:] == source[1:]
        with open(os.path.join(relative, f"{split}.phn"), "rb") as a, open(os.path.join(copies, f"{split}.phn"), "rb") as b:
            assert a.read() == b.read()
    assert len(audio_finetuning_split(copies, "valid", "ltr")) == 2
    assert len(hubert_pretraining_split(copies, "valid", ("phn",), 50.0)) == 2
    assert first_line(os.path.join(relative, "valid.tsv")) == "audio"  # the source is left as it was


def test_the_committed_demo_corpus_is_portable_and_its_copies_load(elsewhere, tmp_path):
    for split in ("train", "valid"):
        assert first_line(os.path.join(DEMO, f"{split}.tsv")) == "audio"  # portable: no absolute root committed
    copies = str(tmp_path / "demo_absolute")
    done = subprocess.run([sys.executable, SCRIPT, DEMO, "--out", copies], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "train.tsv, valid.tsv with an absolute root" in done.stderr
    assert sorted(os.listdir(copies)) == sorted(["dict.ltr.txt"] + [f"{s}.{e}" for s in ("train", "valid")
                                                                    for e in ("tsv", "wrd", "ltr", "sent", "voice")])
    assert first_line(os.path.join(copies, "valid.tsv")) == os.path.join(DEMO, "audio")
    assert len(audio_finetuning_split(copies, "valid", "ltr")) == len(read_manifest(os.path.join(DEMO, "valid.tsv")))
    again = subprocess.run([sys.executable, SCRIPT, DEMO, "--out", copies], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 1 and "already holds dict.ltr.txt" in again.stderr and "--force" in again.stderr
    forced = subprocess.run([sys.executable, SCRIPT, DEMO, "--out", copies, "--force"], capture_output=True,
                            text=True, timeout=120)
    assert forced.returncode == 0, forced.stderr


def test_refusals_write_nothing(corpora, tmp_path):
    relative = corpora[1]
    with pytest.raises(ManifestError, match="is the source folder"):
        write_absolute_copies(relative, relative, force=True)
    with pytest.raises(ManifestError, match="not a folder"):
        write_absolute_copies(os.path.join(relative, "train.tsv"), str(tmp_path / "a"))
    with pytest.raises(ManifestError, match="no manifest"):
        write_absolute_copies(os.path.join(relative, "audio"), str(tmp_path / "b"))
    broken = tmp_path / "broken"
    shutil.copytree(relative, broken, ignore=shutil.ignore_patterns("audio"))
    with pytest.raises(ManifestError, match="is not a directory"):  # every manifest is checked first
        write_absolute_copies(str(broken), str(tmp_path / "c"))
    assert not any((tmp_path / name).exists() for name in ("a", "b", "c"))
    out = tmp_path / "d"
    out.mkdir()
    (out / "train.ltr").write_text("mine\n")
    with pytest.raises(ManifestError, match="already holds train.ltr"):
        write_absolute_copies(relative, str(out))
    assert os.listdir(out) == ["train.ltr"] and (out / "train.ltr").read_text() == "mine\n"


def test_copies_take_every_split_side_file_and_dictionary_and_nothing_else(corpora, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(corpora[1], source, ignore=shutil.ignore_patterns("audio"))
    os.symlink(os.path.join(corpora[1], "audio"), source / "audio")
    extra = {"train.km.txt": "1 2\n", "dict.km.txt": "1 5\n", "train.old.tsv": "a\tb\n", "notes.txt": "mine\n",
             "other.wrd": "HELLO\n"}
    for name, text in extra.items():
        (source / name).write_text(text)
    out = tmp_path / "out"
    out.mkdir()  # an existing, empty folder is fine
    written = {os.path.basename(path) for path in write_absolute_copies(str(source), str(out))}
    assert {"train.km.txt", "dict.km.txt"} <= written  # SPLIT.anything and dict.*.txt are copied as they are
    assert not written & {"train.old.tsv", "notes.txt", "other.wrd"}  # a .tsv that is no manifest, strays
    assert (out / "train.km.txt").read_text() == "1 2\n"


@contextlib.contextmanager
def ascii_locale():
    """LC_CTYPE set to C for the block: open() without an encoding then reads ASCII (Python's UTF-8 mode
    would override it: the test needs it off, as it is unless the process started in the C locale)."""
    if sys.flags.utf8_mode:
        pytest.skip("Python's UTF-8 mode is on: open() reads UTF-8 whatever the locale")
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)


def test_manifests_and_side_files_are_read_as_utf8_whatever_the_locale(tmp_path):
    """A corpus with non-ASCII audio names, transcripts, dictionaries and other tables, copied while the
    locale's codec is ASCII: every file is read as UTF-8 (the locale's codec would fail on them). In process:
    the copy runs under the test, and the file names keep the filesystem codec the process started with."""
    import numpy as np
    import soundfile

    source, out = tmp_path / "corpus", tmp_path / "copies"
    (source / "audio").mkdir(parents=True)
    for name in ("café.flac", "naïve.flac"):
        soundfile.write(str(source / "audio" / name), np.zeros(800, dtype="float32"), 16000)
    (source / "train.tsv").write_text("audio\ncafé.flac\t800\nnaïve.flac\t800\n", encoding="utf-8")
    (source / "train.wrd").write_text("CAFÉ\nNAÏVE\n", encoding="utf-8")
    (source / "dict.ltr.txt").write_text("É 1\nÏ 1\n", encoding="utf-8")
    (source / "voices.tsv").write_text("voix\tlangue\nÉlodie\tfr\n", encoding="utf-8")  # no manifest
    with ascii_locale():
        assert open(source / "train.wrd").encoding == "ANSI_X3.4-1968"  # what open() would read without one
        write_absolute_copies(str(source), str(out))
    assert sorted(os.listdir(out)) == ["dict.ltr.txt", "train.tsv", "train.wrd"]
    copy = (out / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert copy == [str(source / "audio"), "café.flac\t800", "naïve.flac\t800"]
    assert (out / "train.wrd").read_text(encoding="utf-8") == "CAFÉ\nNAÏVE\n"
    assert (out / "dict.ltr.txt").read_text(encoding="utf-8") == "É 1\nÏ 1\n"
