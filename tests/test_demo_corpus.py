"""laser_fairseq.data.demo_corpus: the demo preset of the synthetic corpus tool (`make_synthetic_corpus --preset
demo`) rebuilds the committed manifests/demo byte for byte; scripts/make_demo_corpus.py is its deprecated alias."""

import filecmp
import os

import pytest
import soundfile as sf

from laser_fairseq.cli import make_demo_corpus, make_synthetic_corpus
from laser_fairseq.data.demo_corpus import DEMO_PRESET
from laser_fairseq.data.synthetic_corpus import CorpusError, build_preset
from laser_fairseq.checkout import REPO

COMMITTED = os.path.join(REPO, "manifests", "demo")


def files_in(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names)


def manifest(folder, split):
    with open(os.path.join(folder, f"{split}.tsv"), encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


@pytest.fixture(scope="module")
def preset_corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo_preset") / "demo")
    assert make_synthetic_corpus.main(["--preset", "demo", "--out", out, "--workers", "2"]) == 0
    return out


def test_the_preset_rebuilds_the_committed_corpus_byte_for_byte(preset_corpus):
    """manifests/demo is what `make_synthetic_corpus --preset demo` writes (pinned libespeak-ng, torchaudio and
    libsndfile: constraints.txt): audio, manifests, side files, voices and README."""
    assert files_in(preset_corpus) == files_in(COMMITTED)
    match, mismatch, errors = filecmp.cmpfiles(preset_corpus, COMMITTED, files_in(COMMITTED), shallow=False)
    assert (mismatch, errors) == ([], []) and len(match) == 80 + 13
    for split in ("train", "valid"):
        assert manifest(COMMITTED, split)[0] == "audio"


def test_the_preset_audio_is_what_the_manifest_says_and_audible(preset_corpus):
    for split in ("train", "valid"):
        for name, samples in manifest(preset_corpus, split)[1]:
            audio, rate = sf.read(os.path.join(preset_corpus, "audio", name), dtype="int16")
            assert rate == 16_000 and audio.ndim == 1 and audio.size == int(samples)
            assert 1.0 <= audio.size / rate <= 4.0, name
            assert (audio.astype(float) / 32768.0).std() > 0.01, name


def test_the_preset_readme_and_voice_table_describe_this_build(preset_corpus):
    readme = open(os.path.join(preset_corpus, "README.md"), encoding="utf-8").read()
    assert "16 sentences, each spoken by all 5 voices:\n  80 files" in readme
    assert "s14, s15, s16; `train` holds the other\n  13 sentences" in readme
    assert "| s12 | train | Would you like orange juice? |" in readme
    voices = open(os.path.join(preset_corpus, "voices.tsv"), encoding="utf-8").read().splitlines()
    assert voices[0] == "voice_id\tespeak_voice\tpitch\tpitch_range\trate\tdescription"
    assert voices[2] == "v2\ten+f2\t62\t50\t182\tBritish English, female"


def test_the_preset_is_byte_identical_whatever_the_number_of_workers(preset_corpus, tmp_path):
    again = build_preset(str(tmp_path / "demo"), DEMO_PRESET, workers=1, log=lambda message: None).out
    assert files_in(again) == files_in(preset_corpus)
    mismatch = filecmp.cmpfiles(preset_corpus, again, files_in(preset_corpus), shallow=False)[1:]
    assert mismatch == ([], [])
    with pytest.raises(CorpusError, match="already exists and is not empty; pass --force"):
        build_preset(again, DEMO_PRESET, log=lambda message: None)  # replaced only when asked
    (tmp_path / "demo" / "README.md").write_text("stale")
    build_preset(again, DEMO_PRESET, workers=2, force=True, log=lambda message: None)
    assert filecmp.cmp(os.path.join(again, "README.md"), os.path.join(COMMITTED, "README.md"), shallow=False)


def test_bad_settings_and_an_existing_corpus_are_refused_with_the_option_named(preset_corpus, capsys):
    assert make_synthetic_corpus.main(["--preset", "demo", "--out", preset_corpus, "--valid-sentences", "16"]) == 1
    assert "--valid-sentences must be between 1 and 15" in capsys.readouterr().err
    before = files_in(preset_corpus)
    assert make_synthetic_corpus.main(["--preset", "demo", "--out", preset_corpus]) == 1
    assert "already exists and is not empty; pass --force" in capsys.readouterr().err
    assert files_in(preset_corpus) == before
    fixed = ["--sentences", "20", "--seed", "3", "--relative-root"]
    assert make_synthetic_corpus.main(["--preset", "demo", "--out", preset_corpus, *fixed]) == 1
    assert "error: --preset demo fixes --sentences, --seed, --relative-root; leave them out" in capsys.readouterr().err


def test_the_deprecated_alias_warns_and_keeps_its_flags(tmp_path, capsys):
    out = str(tmp_path / "demo")
    with pytest.warns(DeprecationWarning, match="make_synthetic_corpus.py --preset demo"):
        assert make_demo_corpus.main(["--out-dir", out, "--valid-sentences", "1", "--workers", "2"]) == 0
    with open(os.path.join(out, "valid.sent")) as handle:
        assert sorted(set(handle.read().split())) == ["s16"]
    with open(os.path.join(out, "train.sent")) as handle:
        assert "s15" in handle.read().split()
    assert make_demo_corpus.parse_args([]).out_dir == COMMITTED
    for valid in ("0", "16"):
        with pytest.warns(DeprecationWarning):
            assert make_demo_corpus.main(["--out-dir", str(tmp_path / "other"), "--valid-sentences", valid]) == 1
        assert f"--valid-sentences must be between 1 and 15 (preset 'demo' has 16 sentences), got {valid}" in (
            capsys.readouterr().err)
    assert not (tmp_path / "other").exists()
