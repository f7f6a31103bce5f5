"""SUPERB PR through s3prl's recipe (laser_fairseq.evaluation.superb_pr, scripts/superb_pr.py) on a few demo
utterances laid out as a synthetic corpus, a few steps: result.json, learned layer weights, resume, bad inputs,
and each s3prl 0.4.18 compatibility patch (each shown to be needed)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from laser_fairseq.evaluation import s3prl_compat
from laser_fairseq.evaluation.superb_pr import SuperbPRError, run_superb_pr
from laser_fairseq.checkout import REPO

DEMO = os.path.join(REPO, "manifests", "demo")
STEPS = 4
SMALL = dict(steps=STEPS, eval_step=2, batch_size=4)


def make_corpus(root, with_phones=True):
    """A synthetic-corpus layout (tsv + .phones) of demo utterances: train 8, valid 2, test 2. The "phones" are
    the letters of the transcript (a stand-in inventory; the recipe only needs a token sequence)."""
    os.makedirs(os.path.join(root, "audio"))
    with open(os.path.join(DEMO, "train.tsv")) as handle:
        entries = handle.read().splitlines()[1:]
    with open(os.path.join(DEMO, "train.wrd")) as handle:
        words = handle.read().splitlines()
    chosen = list(zip(entries, words))[:12]
    for split, part in (("train", chosen[:8]), ("valid", chosen[8:10]), ("test", chosen[10:12])):
        lines, phones = ["audio"], []
        for entry, text in part:
            name = entry.split("\t")[0]
            shutil.copy(os.path.join(DEMO, "audio", name), os.path.join(root, "audio", name))
            lines.append(entry)
            phones.append(" ".join(text.replace(" ", "")))
        with open(os.path.join(root, f"{split}.tsv"), "w") as handle:
            handle.write("\n".join(lines) + "\n")
        if with_phones:
            with open(os.path.join(root, f"{split}.phones"), "w") as handle:
                handle.write("\n".join(phones) + "\n")
    return str(root)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("superb") / "corpus")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus, upstream):
    out = str(tmp_path_factory.mktemp("superb") / "run")
    return out, run_superb_pr(upstream, corpus, out, **SMALL)


def test_result_json_has_the_fields_and_the_upstream_is_s3prls(finished, upstream):
    out, result = finished
    with open(os.path.join(out, "result.json")) as handle:
        assert json.load(handle) == result
    for key in ("per", "valid_per", "steps", "upstream_sha256", "layer_weights"):
        assert key in result
    assert 0.0 <= result["per"] < 5 and 0.0 <= result["valid_per"] < 5
    assert result["steps"] == STEPS and result["upstream_class"] == "s3prl_hubert"
    assert len(result["layer_weights"]) == 4 + 1  # make_tiny_hubert: the CNN output and 4 blocks
    assert abs(sum(result["layer_weights"]) - 1.0) < 1e-4
    # s3prl's conversion cache is written beside the copy in the run folder, never beside the source file
    assert os.path.isfile(os.path.join(out, "upstream", "upstream.converted.pt"))
    assert not [name for name in os.listdir(os.path.dirname(upstream)) if ".converted." in name]


def test_layer_weights_are_learned(finished):
    _, result = finished
    uniform = 1.0 / len(result["layer_weights"])  # s3prl's Featurizer starts from zeros: softmax = uniform
    assert max(abs(weight - uniform) for weight in result["layer_weights"]) > 1e-4


def test_the_seed_reaches_the_head(finished, corpus, upstream, tmp_path):
    """Another --seed starts s3prl's head elsewhere (building the upstream must not re-seed torch): other
    layer weights after the same steps; the same seed again gives the same ones."""
    _, seed0 = finished
    seed1 = run_superb_pr(upstream, corpus, str(tmp_path / "seed1"), seed=1, **SMALL)
    assert seed1["seed"] == 1 and seed1["layer_weights"] != seed0["layer_weights"]
    again = run_superb_pr(upstream, corpus, str(tmp_path / "seed0"), seed=0, **SMALL)
    assert again["layer_weights"] == seed0["layer_weights"]


def test_resume_continues_from_s3prls_checkpoint(finished, corpus, upstream, tmp_path, caplog):
    out = str(tmp_path / "resumed")
    shutil.copytree(finished[0], out)
    caplog.set_level("INFO")
    result = run_superb_pr(upstream, corpus, out, steps=STEPS + 2, eval_step=2, batch_size=4)
    assert any("Loading checkpoints from" in record.getMessage() and f"step_{STEPS}" in record.getMessage()
               for record in caplog.records)
    assert result["steps"] == STEPS + 2


def test_a_finished_out_of_another_upstream_is_refused_and_kept(finished, corpus, tmp_path):
    from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint

    out, _ = finished
    other = str(tmp_path / "other.pt")
    save_checkpoint(make_tiny_hubert(seed=5), other)
    before = open(os.path.join(out, "result.json")).read()
    with pytest.raises(SuperbPRError, match="another upstream.*pass a new --out"):
        run_superb_pr(other, corpus, out, **SMALL)
    assert open(os.path.join(out, "result.json")).read() == before


def test_bad_inputs_name_the_file_and_the_fix(tmp_path, upstream, corpus):
    from laser_fairseq.cli import superb_pr as cli

    not_a_model = tmp_path / "notes.pt"
    not_a_model.write_text("not a checkpoint")
    with pytest.raises(SystemExit, match=f"cannot load the upstream: {not_a_model}"):
        cli.main(["--upstream", str(not_a_model), "--data", corpus, "--out", str(tmp_path / "a")])
    no_phones = make_corpus(tmp_path / "no_phones", with_phones=False)
    with pytest.raises(SystemExit, match=r"train\.phones: missing.*make_synthetic_corpus\.py"):
        cli.main(["--upstream", upstream, "--data", no_phones, "--out", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="neither a synthetic corpus"):
        cli.main(["--upstream", upstream, "--data", str(tmp_path), "--out", str(tmp_path / "c")])
    with pytest.raises(SystemExit, match=r"unseen\.tsv: missing"):
        cli.main(["--upstream", upstream, "--data", corpus, "--out", str(tmp_path / "d"), "--test-splits", "unseen"])
    assert not any(os.path.exists(tmp_path / name) for name in "abd")


def test_a_finished_run_is_tested_on_another_split_without_training_again(finished, corpus, upstream, tmp_path,
                                                                          caplog):
    """The probe trained for one split serves another (the effect table's two eval splits): s3prl's test stage
    only; the first split's numbers and the trained checkpoints are kept; asking again does nothing."""
    out = str(tmp_path / "two_splits")
    shutil.copytree(finished[0], out)
    train_dir = os.path.join(out, "s3prl", "train")
    trained = {name: os.stat(os.path.join(train_dir, name)).st_mtime_ns for name in os.listdir(train_dir)}
    caplog.set_level("INFO")
    result = run_superb_pr(upstream, corpus, out, test_splits=["test", "valid"], **SMALL)
    messages = [record.getMessage() for record in caplog.records]
    assert not any("Train Model" in message for message in messages)
    assert any("Test model on" in message and "corpus_valid.csv" in message for message in messages)
    assert not any("Test model on" in message and "corpus_test.csv" in message for message in messages)
    assert {name: os.stat(os.path.join(train_dir, name)).st_mtime_ns for name in os.listdir(train_dir)} == trained
    assert result["test"]["corpus_test"] == finished[1]["test"]["corpus_test"] == result["per"]
    # the valid split tested by s3prl's test stage: the same PER its training-time validation logged there
    assert result["test"]["corpus_valid"] == pytest.approx(result["valid_per"])
    caplog.clear()
    assert run_superb_pr(upstream, corpus, out, test_splits=["valid"], **SMALL) == result
    assert not any("Stage" in record.getMessage() for record in caplog.records)


PATCHES_NEEDED = textwrap.dedent("""
    import json, sys, torchaudio
    from laser_fairseq.evaluation import s3prl_compat as compat
    found = {}
    def attempt(name, module, patch):
        try:
            __import__(module)
            found[name + "_without"] = "ok"
        except Exception as error:
            found[name + "_without"] = f"{type(error).__name__}: {error}"
        with patch():
            __import__(module)
            found[name + "_with"] = "ok"
    attempt("audio_backend", "s3prl.dataio.dataset.load_audio", compat.audio_backend_shim)
    with compat.audio_backend_shim():
        attempt("sox_effects", "s3prl.upstream.mos_prediction.expert", compat.sox_effects_stub)  # s3prl.hub imports it
        with compat.sox_effects_stub():
            attempt("problem", "s3prl.problem.asr.superb_pr", compat.problem_package)
    found["undone"] = [hasattr(torchaudio, "set_audio_backend"), "torchaudio.sox_effects" in sys.modules,
                       "s3prl.problem" in sys.modules]
    print(json.dumps(found))
""")


def test_each_import_patch_is_needed_and_undone_on_exit():
    done = subprocess.run([sys.executable, "-c", PATCHES_NEEDED], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert "set_audio_backend" in found["audio_backend_without"] and found["audio_backend_with"] == "ok"
    assert "torchaudio.sox_effects" in found["sox_effects_without"] and found["sox_effects_with"] == "ok"
    assert found["problem_without"] != "ok" and found["problem_with"] == "ok"
    assert found["undone"] == [False, False, False]


def test_the_safe_globals_patch_is_needed_for_s3prls_fairseq_conversion(upstream, tmp_path):
    import pickle

    with s3prl_compat.s3prl_environment():
        from s3prl.upstream.hubert.convert import load_and_convert_fairseq_ckpt
    with pytest.raises(pickle.UnpicklingError):
        load_and_convert_fairseq_ckpt(upstream, str(tmp_path / "without.pt"))
    with s3prl_compat.fairseq_safe_globals():
        load_and_convert_fairseq_ckpt(upstream, str(tmp_path / "with.pt"))
    assert os.path.isfile(tmp_path / "with.pt")


def test_make_tiny_upstream_like_gives_an_untrained_model_of_the_same_shape(tmp_path):
    from laser_fairseq.checkpoint_io import load_checkpoint

    pretrained = os.path.join(REPO, "examples", "hubert_pretraining", "tiny_progressive_hubert.pt")
    out = str(tmp_path / "random.pt")
    done = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "make_tiny_upstream.py"), "--kind", "hubert",
                           "--like", pretrained, "--output", out], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    trained, fresh = load_checkpoint(pretrained), load_checkpoint(out)
    assert fresh["cfg"]["model"] == trained["cfg"]["model"]
    assert {k: v.shape for k, v in fresh["model"].items()} == {k: v.shape for k, v in trained["model"].items()}
    assert not all((fresh["model"][k] == v).all() for k, v in trained["model"].items())


def test_an_upstream_s3prl_has_no_class_for_is_served_by_ours(tmp_path):
    """A Hugging Face directory (as a LASER training checkpoint) goes through our upstream, inside s3prl's
    S3PRLUpstream: one hidden state per block plus the CNN output, 320 samples per frame, padded batches."""
    import torch

    from laser_fairseq.evaluation.s3prl_upstream import OURS, project_upstream, upstream_route
    from laser_fairseq.tiny_upstream import save_tiny_hf_directory

    path = str(tmp_path / "hf")
    save_tiny_hf_directory(path, "hubert", layers=2, dim=64)
    assert upstream_route(path) == OURS
    upstream = project_upstream(path, str(tmp_path / "work")).eval()
    assert upstream.num_layers == 3 and upstream.downsample_rates == [320] * 3
    with torch.no_grad():
        states, lengths = upstream(torch.randn(2, 16000), torch.tensor([16000, 8000]))
    assert len(states) == 3 and states[0].shape[:2] == (2, 50) and lengths[0].tolist() == [50, 25]


def make_librispeech(root):
    """LibriSpeech's own layout (SPEAKERS.TXT, <split>/<speaker>/<chapter>/<id>.flac + <speaker>-<chapter>.trans.txt)
    of demo utterances: train-clean-100 8, dev-clean 2, test-clean 2; and a local lexicon of their words (each
    word's "phones" = its letters) standing in for s3prl's LibriSpeech lexicon files."""
    with open(os.path.join(DEMO, "train.tsv")) as handle:
        names = [line.split("\t")[0] for line in handle.read().splitlines()[1:]]
    with open(os.path.join(DEMO, "train.wrd")) as handle:
        texts = handle.read().splitlines()
    pairs = list(zip(names, texts))[:12]
    speakers = ["; ID |SEX| SUBSET | MINUTES | NAME"]
    for number, (split, part) in enumerate((("train-clean-100", pairs[:8]), ("dev-clean", pairs[8:10]),
                                            ("test-clean", pairs[10:12])), start=1):
        speaker, chapter = 100 + number, 200 + number
        folder = os.path.join(root, split, str(speaker), str(chapter))
        os.makedirs(folder)
        lines = []
        for index, (name, text) in enumerate(part):
            utterance = f"{speaker}-{chapter}-{index:04d}"
            shutil.copy(os.path.join(DEMO, "audio", name), os.path.join(folder, f"{utterance}.flac"))
            lines.append(f"{utterance} {text}")
        with open(os.path.join(folder, f"{speaker}-{chapter}.trans.txt"), "w") as handle:
            handle.write("\n".join(lines) + "\n")
        speakers.append(f"{speaker} | F | {split} | 1.00 | Reader {number}")
    with open(os.path.join(root, "SPEAKERS.TXT"), "w") as handle:
        handle.write("\n".join(speakers) + "\n")
    words = sorted({word for _, text in pairs for word in text.split()})
    lexicon = os.path.join(root, "lexicon.txt")
    with open(lexicon, "w") as handle:
        handle.write("".join(f"{word}\t{' '.join(word.lower())}\n" for word in words))
    return str(root), lexicon, dict(pairs)


def test_librispeech_layout_goes_through_s3prls_preparation_and_g2p_with_a_local_lexicon(upstream, tmp_path):
    import pandas as pd

    root, lexicon, _ = make_librispeech(tmp_path / "LibriSpeech")
    out = str(tmp_path / "run")
    result = run_superb_pr(upstream, root, out, steps=2, eval_step=1, batch_size=2, lexicon=[lexicon])
    assert 0.0 <= result["per"] < 5 and list(result["test"]) == ["test-clean"]
    train = pd.read_csv(os.path.join(out, "s3prl", "train-clean-100.csv"))
    assert len(train) == 8 and all(train["wav_path"].str.endswith(".flac"))
    # s3prl's data preparation read the transcripts, and its G2P phonemised them with our lexicon's entries
    with open(os.path.join(root, "train-clean-100", "101", "201", "101-201.trans.txt")) as handle:
        text = dict(line.split(" ", 1) for line in handle.read().splitlines())
    for utterance, phones in zip(train["id"], train["transcription"]):
        assert phones.split() == [letter for word in text[utterance].split() for letter in word.lower()]
    with pytest.raises(SuperbPRError, match="lexicon"):
        run_superb_pr(upstream, root, str(tmp_path / "no_lexicon"), steps=2, eval_step=1, batch_size=2)
