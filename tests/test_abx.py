"""laser-abx (laser_fairseq.cli.abx, scripts/abx.py) and laser_fairseq.analysis.abx / abx_run / abx_fastabx: ABX through fastabx on a small synthetic corpus.

The corpus (20 sentences x 8 voices, test split 6 sentences = 48 utterances) is synthesised once; the committed
tiny pretrained HuBERT and a random model of the same shape (scripts/make_tiny_upstream.py --like) are each
measured once by the script, and the tests read their abx.json.
"""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from laser_fairseq.analysis import abx, abx_fastabx
from laser_fairseq.cli import abx as abx_cli
from laser_fairseq.cli import make_tiny_upstream
from laser_fairseq.data.synthetic_corpus import CorpusSettings, build_corpus
from laser_fairseq.checkout import REPO

PRETRAINED = os.path.join(REPO, "examples", "hubert_pretraining", "tiny_progressive_hubert.pt")
SETTINGS = CorpusSettings(sentences=20, voices=8, valid_sentences=2, test_sentences=6, seed=3)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("abx_corpus") / "corpus")
    build_corpus(out, SETTINGS, workers=1, log=lambda message: None)
    return out


@pytest.fixture(scope="module")
def random_upstream(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("abx_random") / "random_tiny_hubert.pt")
    make_tiny_upstream.main(["--like", PRETRAINED, "--output", path, "--seed", "1"])
    return path


@pytest.fixture(scope="module")
def results(corpus, random_upstream, tmp_path_factory):
    """abx.json of the pretrained and the random model on the test split, written by scripts/abx.py."""
    found = {}
    for name, upstream in (("pretrained", PRETRAINED), ("random", random_upstream)):
        out = str(tmp_path_factory.mktemp(f"abx_{name}"))
        abx_cli.main(["--upstream", upstream, "--data", corpus, "--split", "test", "--out", out])
        with open(os.path.join(out, "abx.json"), encoding="utf-8") as handle:
            found[name] = dict(json.load(handle), out=out)
    return found


# ------------------------------------------------------------------------------------------------ items


def test_phone_segments_and_triphone_items():
    symbols = ["sil", "a", "b", "c"]
    labels = [0, 0, 1, 1, 1, 2, 0, 3, 3, 0]
    assert abx_fastabx.phone_segments(labels) == [(0, 0, 1), (1, 2, 4), (2, 5, 5), (0, 6, 6), (3, 7, 8), (0, 9, 9)]
    items = abx_fastabx.triphone_items("f", labels, symbols, "v1")
    assert [(i.phone, i.prev_phone, i.next_phone, i.first_frame, i.last_frame) for i in items] == [
        ("a", "sil", "b", 2, 4), ("b", "a", "sil", 5, 5), ("c", "sil", "sil", 7, 8)]
    assert (str(items[0].onset), str(items[0].offset)) == ("0.04", "0.10")


def test_fastabx_slices_exactly_the_labelled_frames(corpus, tmp_path):
    """With frame t's feature = t, every item's features in fastabx's Dataset are its labelled frames."""
    split = abx.load_abx_split(corpus, "test")
    item_path = str(tmp_path / "test.item")
    abx_fastabx.write_item_file(item_path, split.items)
    features = {
        abx_fastabx.file_key(u.path, split.root, split.extension):
            torch.arange(len(labels), dtype=torch.float32)[:, None].repeat(1, 2)
        for u, labels in zip(split.utterances, split.labels)
    }
    dataset = abx_fastabx.dataset_from_features(item_path, split.root, split.extension, features)
    assert len(dataset.accessor) == len(split.items) > 500
    for index, item in enumerate(split.items):
        frames = dataset.accessor[index][:, 0].numpy()
        np.testing.assert_array_equal(frames, np.arange(item.first_frame, item.last_frame + 1))


# ------------------------------------------------------------------------------------------------ results


def test_result_file_has_every_layer_and_both_inputs(results):
    result = results["pretrained"]
    assert list(result["layers"]) == ["cnn", "block0_in", "block1", "block2", "block3", "block4"]
    assert set(result["inputs"]) == {"log-mel", "mfcc"}
    for scores in [*result["layers"].values(), *result["inputs"].values()]:
        assert set(scores) == {"within", "across"}
        assert all(0.0 <= value <= 100.0 for value in scores.values())
    assert len(result["upstream_sha256"]) == 64 and result["split"] == "test"
    assert result["items"]["speakers"] == 8 and result["items"]["items"] > 500
    assert os.path.isfile(os.path.join(result["out"], "test.item"))


def test_inputs_are_worse_across_voices_than_within(results):
    for name, scores in results["pretrained"]["inputs"].items():
        assert scores["across"] > scores["within"] + 5, (name, scores)


def test_a_pretrained_layer_beats_the_random_models_same_layer(results):
    pretrained, random = results["pretrained"]["layers"], results["random"]["layers"]
    assert pretrained["block2"]["across"] < random["block2"]["across"] - 10, (pretrained["block2"], random["block2"])
    # the inputs do not depend on the model
    for name, scores in results["pretrained"]["inputs"].items():
        assert scores == results["random"]["inputs"][name]


def test_one_layer_equals_fastabx_zerospeech_abx_called_directly(corpus, results, tmp_path):
    """block2's numbers from scripts/abx.py == fastabx.zerospeech_abx on the same item file and features, the
    features saved as .pt files and read by fastabx's default torch.load."""
    from fastabx import zerospeech_abx

    from laser_fairseq.models.trained_upstream import open_upstream

    split = abx.load_abx_split(corpus, "test")
    upstream = open_upstream(PRETRAINED).upstream.eval()
    features = abx.encode_split(upstream, split)["block2"]
    root = tmp_path / "features"
    for key, tensor in features.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        torch.save(tensor, root / f"{key}.pt")
    item = os.path.join(results["pretrained"]["out"], "test.item")
    direct = {
        mode: 100.0 * zerospeech_abx(item, root, max_size_group=10, max_x_across=5, speaker=mode, context="within",
                                     distance="angular", frequency=50, seed=0, device="cpu", progress=False)
        for mode in ("within", "across")
    }
    assert direct == results["pretrained"]["layers"]["block2"]


# --------------------------------------------------------------------------------------------- bad input


def run_error(argv, capsys=None):
    with pytest.raises(SystemExit) as stopped:
        abx_cli.main(argv)
    return str(stopped.value.code)


def test_split_without_labels_is_a_clear_error(corpus, tmp_path):
    data = tmp_path / "corpus"
    shutil.copytree(corpus, data, symlinks=True)
    os.remove(data / "valid.phn")
    out = tmp_path / "out"
    message = run_error(["--upstream", PRETRAINED, "--data", str(data), "--split", "valid", "--out", str(out)])
    assert f"{data / 'valid.phn'}: not found: split 'valid' has no frame phone labels" in message
    assert "scripts/alignments_to_frame_labels.py" in message
    assert not (out / "abx.json").exists()


def test_unknown_split_lists_the_splits(corpus, tmp_path):
    message = run_error(["--upstream", PRETRAINED, "--data", corpus, "--split", "dev", "--out", str(tmp_path)])
    assert "dev.tsv: no such split" in message and "test, train, valid" in message


def test_unloadable_upstream_is_a_clear_error(corpus, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    message = run_error(["--upstream", str(bad), "--data", corpus, "--split", "test", "--out", str(tmp_path / "o")])
    assert str(bad) in message and "cannot be loaded" in message or "checkpoint" in message
    assert not (tmp_path / "o" / "abx.json").exists()


def test_a_finished_out_of_another_upstream_is_not_overwritten(corpus, results, random_upstream):
    out = results["pretrained"]["out"]
    before = open(os.path.join(out, "abx.json"), encoding="utf-8").read()
    message = run_error(["--upstream", random_upstream, "--data", corpus, "--split", "test", "--out", out])
    assert "a finished ABX run of another upstream or split" in message and "not overwritten" in message
    assert open(os.path.join(out, "abx.json"), encoding="utf-8").read() == before
    # the same upstream and split: nothing to do, nothing rewritten
    abx_cli.main(["--upstream", PRETRAINED, "--data", corpus, "--split", "test", "--out", out])
    assert open(os.path.join(out, "abx.json"), encoding="utf-8").read() == before


def test_analyze_layers_abx_columns_equal_the_abx_run_on_the_same_split(corpus, results, tmp_path):
    """analyze_layers --abx scores the frames its analysis encoded: every layer's within / across equals abx.json's
    for the same upstream and split (the same features, item file and fastabx settings)."""
    from laser_fairseq.cli import analyze_layers

    out = tmp_path / "layers"
    analyze_layers.main(["--checkpoint", PRETRAINED, "--manifest", os.path.join(corpus, "test.tsv"), "--out", str(out),
                         "--probe-train-utterances", "8", "--abx"])
    with open(out / "summary.json", encoding="utf-8") as handle:
        layers = {layer["name"]: layer for layer in json.load(handle)["main"]["layers"]}
    expected = results["pretrained"]["layers"]
    assert set(layers) == set(expected)
    for name, scores in expected.items():
        assert (layers[name]["abx_within"], layers[name]["abx_across"]) == (scores["within"], scores["across"])
    with open(out / "layers.md", encoding="utf-8") as handle:
        assert "ABX across" in handle.read()
