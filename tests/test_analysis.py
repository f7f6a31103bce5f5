"""Known-answer tests of the layer-wise analysis (laser_fairseq.analysis) and an end-to-end CLI run.

The measures are checked on inputs whose answers are known exactly (identity, rotations, synthetic
corpora that encode only the voice or only the sentence), DTW against a float64 brute force over every
monotone path, and the CLI on tiny random HuBERT / WavLM checkpoints with the demo corpus.
"""

from __future__ import annotations

import csv
import itertools
import math
import os

import numpy as np
import pytest
import torch

from laser_fairseq.analysis import measures
from laser_fairseq.analysis.features import layer_frames, layer_names, log_mel_frames, make_perturber, perturbed_copy
from laser_fairseq.analysis.layerwise import input_likeness
from laser_fairseq.analysis.utterances import load_utterances
from laser_fairseq.checkpoint_io import SAFE_GLOBALS
from laser_fairseq.data.audio import read_audio
from laser_fairseq.models.trained_upstream import open_upstream
from laser_fairseq.tiny_upstream import make_tiny_hubert, make_tiny_wavlm, save_checkpoint
from laser_fairseq.checkout import REPO

DEMO_TRAIN = os.path.join(REPO, "manifests", "demo", "train.tsv")


@pytest.fixture(scope="module")
def demo_log_mel():
    entry = load_utterances(DEMO_TRAIN, max_utterances=1).utterances[0]
    return log_mel_frames(read_audio(entry.path, 16000)).astype(np.float64)


# ---------------------------------------------------------------------------------------------------- CKA


def test_cka_of_the_input_with_itself_is_one(demo_log_mel):
    assert measures.linear_cka(demo_log_mel, demo_log_mel) == pytest.approx(1.0, abs=1e-12)
    # the layer-level helper pools utterances and trims them to the shorter frame count
    layer = [demo_log_mel, demo_log_mel[:-3]]
    assert input_likeness(layer, [demo_log_mel[:-1], demo_log_mel[:-3]]) == pytest.approx(1.0, abs=1e-12)


def test_cka_is_invariant_to_orthogonal_rotation_isotropic_scaling_and_shift(demo_log_mel):
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(80, 80)))
    rotated = demo_log_mel @ rotation
    assert measures.linear_cka(rotated, demo_log_mel) == pytest.approx(1.0, abs=1e-10)
    assert measures.linear_cka(3.7 * rotated + 5.0, demo_log_mel) == pytest.approx(1.0, abs=1e-10)
    # into a wider space (an orthonormal 80 -> 120 embedding) as a layer of another width would be
    embedding, _ = np.linalg.qr(rng.normal(size=(120, 80)))
    assert measures.linear_cka(demo_log_mel @ embedding.T, demo_log_mel) == pytest.approx(1.0, abs=1e-10)


def test_cka_of_independent_random_features_is_near_zero_and_not_of_an_anisotropic_scaling():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(4000, 8)), rng.normal(size=(4000, 12))
    assert measures.linear_cka(x, y) < 0.01
    stretched = x * np.array([10.0, 1, 1, 1, 1, 1, 1, 0.1])  # not an isotropic scaling: CKA < 1
    assert measures.linear_cka(stretched, x) < 0.9
    assert math.isnan(measures.linear_cka(np.ones((10, 3)), x[:10]))


# ---------------------------------------------------------------------------------------------------- DTW


def brute_force_dtw(cost: np.ndarray):
    """(min total cost, length of that path) over every monotone path from (0,0) to (n-1,m-1), float64."""
    n, m = cost.shape
    best = (math.inf, 0)

    def walk(i, j, total, length):
        nonlocal best
        total += cost[i, j]
        length += 1
        if (i, j) == (n - 1, m - 1):
            best = min(best, (total, length))
            return
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            if i + di < n and j + dj < m:
                walk(i + di, j + dj, total, length)

    walk(0, 0, 0.0, 0)
    return best


@pytest.mark.parametrize("n,m", [(1, 1), (1, 4), (4, 1), (3, 3), (4, 6), (6, 5)])
def test_dtw_matches_a_float64_brute_force(n, m):
    rng = np.random.default_rng(10 * n + m)
    x, y = rng.normal(size=(n, 5)), rng.normal(size=(m, 5))
    cost = 1.0 - measures.cosine_similarity_matrix(x, y)
    expected_total, expected_length = brute_force_dtw(cost)
    alignment = measures.dtw_cosine(x, y)
    assert alignment.total_cost == pytest.approx(expected_total, rel=1e-12, abs=1e-12)
    assert alignment.path_length == expected_length
    # the float32 batched path used by the retrieval gives the same normalised distance
    distances = measures.pairwise_dtw_distances([x, y], np.array([[False, True], [True, False]]))
    assert distances[0, 1] == pytest.approx(expected_total / expected_length, abs=1e-6)
    assert distances[1, 0] == distances[0, 1] and np.isnan(distances[0, 0])


def test_invariance_of_an_unperturbed_or_time_stretched_copy_is_one(demo_log_mel):
    assert measures.aligned_cosine_similarity(demo_log_mel, demo_log_mel) == pytest.approx(1.0, abs=1e-12)
    stretched = np.repeat(demo_log_mel, np.where(np.arange(len(demo_log_mel)) % 3 == 0, 2, 1), axis=0)
    assert measures.aligned_cosine_similarity(demo_log_mel, stretched) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(2)
    unrelated = rng.normal(size=(50, 16))
    assert measures.aligned_cosine_similarity(unrelated, rng.normal(size=(60, 16))) < 0.5


# ------------------------------------------------------------------------------------- voice and content


def synthetic_corpus(encode: str, sentences: int = 6, voices: int = 5, warp: bool = False, seed: int = 3):
    """Frame sequences of sentences x voices that encode only ``"voice"`` or only ``"sentence"``."""
    rng = np.random.default_rng(seed)
    voice_vectors = rng.normal(size=(voices, 16))
    templates = [rng.normal(size=(int(rng.integers(8, 15)), 16)) for _ in range(sentences)]
    sequences, voice_ids, sentence_ids = [], [], []
    for s, v in itertools.product(range(sentences), range(voices)):
        if encode == "voice":
            frames = np.tile(voice_vectors[v], (int(rng.integers(6, 14)), 1))
        else:
            frames = templates[s]
            if warp:  # each utterance says the sentence at its own pace
                frames = np.repeat(frames, rng.integers(1, 3, size=len(frames)), axis=0)
        sequences.append(frames)
        voice_ids.append(f"v{v}")
        sentence_ids.append(f"s{s}")
    return sequences, voice_ids, sentence_ids


def pooled(sequences):
    return np.stack([seq.mean(axis=0) for seq in sequences])


def test_voice_only_features_probe_perfectly_and_retrieve_at_chance():
    sequences, voices, sentences = synthetic_corpus("voice")
    probe = measures.voice_probe(pooled(sequences), voices, sentences)
    assert probe.accuracy == 1.0 and probe.chance == pytest.approx(0.2) and probe.folds == 5
    retrieval = measures.cross_voice_retrieval(sequences, voices, sentences)
    assert retrieval.queries == 30
    assert abs(retrieval.mean_average_precision - retrieval.chance) < 0.05
    assert retrieval.mean_average_precision < 0.4


def test_sentence_only_features_retrieve_perfectly_and_probe_at_chance():
    sequences, voices, sentences = synthetic_corpus("sentence")
    probe = measures.voice_probe(pooled(sequences), voices, sentences)
    # folds hold sentences out: all 5 voices of a test sentence look the same, so exactly 1 in 5 is right
    assert probe.accuracy == pytest.approx(probe.chance) and probe.chance == pytest.approx(0.2)
    retrieval = measures.cross_voice_retrieval(sequences, voices, sentences)
    assert retrieval.mean_average_precision == pytest.approx(1.0)
    assert retrieval.chance < 0.3
    warped = synthetic_corpus("sentence", warp=True)
    assert measures.cross_voice_retrieval(*warped).mean_average_precision == pytest.approx(1.0)


def test_collapsed_features_retrieve_exactly_at_chance():
    sequences, voices, sentences = synthetic_corpus("sentence")
    collapsed = [np.ones_like(seq) for seq in sequences]
    retrieval = measures.cross_voice_retrieval(collapsed, voices, sentences)
    assert retrieval.mean_average_precision == pytest.approx(retrieval.chance, abs=1e-12)


def test_expected_average_precision_averages_exactly_over_orders_of_ties():
    distances = np.array([0.1, 0.1, 0.1, 0.2, 0.2, 0.2, 0.2, 0.3])
    relevant = np.array([1, 0, 1, 0, 1, 0, 0, 1], dtype=bool)
    values = []
    for tie_break in itertools.permutations(range(8)):
        order = sorted(range(8), key=lambda i: (distances[i], tie_break[i]))
        hits = np.cumsum(relevant[order])
        values.append(np.sum(hits[relevant[order]] / (np.flatnonzero(relevant[order]) + 1)) / relevant.sum())
    assert measures.expected_average_precision(distances, relevant) == pytest.approx(np.mean(values), abs=1e-12)
    assert measures.expected_average_precision(np.arange(4.0), np.array([1, 1, 0, 0], bool)) == 1.0
    assert measures.expected_average_precision(np.arange(4.0), np.array([0, 0, 0, 1], bool)) == 0.25


def test_probe_folds_hold_whole_sentences_out():
    sentences = np.array(["a", "a", "b", "c", "b", "d", "e", "f", "a"])
    folds = measures.sentence_folds(sentences, max_folds=3)
    for sentence in set(sentences):
        assert len(set(folds[sentences == sentence])) == 1
    assert set(folds) == {0, 1, 2}


# ---------------------------------------------------------------------------------------------- features


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    paths = {"hubert": str(folder / "tiny_hubert.pt"), "wavlm": str(folder / "tiny_wavlm.pt"),
             "laser": str(folder / "laser_checkpoint.pt")}
    save_checkpoint(make_tiny_hubert(layers=3, dim=32, seed=0), paths["hubert"])
    save_checkpoint(make_tiny_wavlm(layers=3, dim=32, seed=1), paths["wavlm"])
    save_checkpoint(laser_checkpoint_with_new_top_blocks(paths["hubert"]), paths["laser"])
    return paths


def laser_checkpoint_with_new_top_blocks(upstream_path: str, trained: int = 2) -> dict:
    """A LASER training checkpoint as ``open_upstream`` reads it: the upstream's weights under
    ``upstream.*`` with the top ``trained`` blocks changed; its recorded upstream path no longer exists."""
    upstream = open_upstream(upstream_path).upstream
    first_trained = upstream.num_layers - trained
    generator = torch.Generator().manual_seed(7)
    weights = {}
    for key, value in upstream.state_dict().items():
        block = key.split("encoder.layers.")[-1].split(".")[0] if "encoder.layers." in key else None
        if block is not None and int(block) >= first_trained and value.is_floating_point():
            value = value + 0.3 * torch.randn(value.shape, generator=generator)
        weights[f"upstream.{key}"] = value
    return {
        "args": None,
        "cfg": {"model": {"_name": "laser", "upstream_path": "/moved/away/tiny_hubert.pt",
                          "trainable_layers": trained}},
        "model": weights,
        "optimizer_history": [{"num_updates": 100}],
    }


def s3prl_expert(kind: str, path: str):
    """s3prl's own model for a tiny original checkpoint: an implementation independent of ours."""
    if kind == "hubert":
        from s3prl.upstream.hubert.hubconf import hubert_local

        with torch.serialization.safe_globals(SAFE_GLOBALS):  # s3prl converts it with fairseq's loader
            return hubert_local(ckpt=path, fairseq=True).eval()
    from s3prl.upstream.wavlm.hubconf import wavlm_local

    return wavlm_local(ckpt=path).eval()


@pytest.mark.parametrize("kind", ["hubert", "wavlm"])
def test_layer_frames_are_the_cnn_output_and_the_hidden_states(tiny_checkpoints, kind):
    """Compared with s3prl's model on the same file: its hidden states, and the CNN output of its
    (fairseq / unilm) feature extractor after the model's feature layer norm."""
    upstream = open_upstream(tiny_checkpoints[kind]).upstream
    waveform = read_audio(load_utterances(DEMO_TRAIN, max_utterances=1).utterances[0].path, 16000)
    frames = layer_frames(upstream, waveform, "cpu")
    expert = s3prl_expert(kind, tiny_checkpoints[kind])
    with torch.no_grad():
        hidden = expert([waveform])["hidden_states"]
        cnn = expert.model.layer_norm(expert.model.feature_extractor(waveform[None]).transpose(1, 2))
    assert len(frames) == len(layer_names(upstream.num_layers)) == upstream.num_layers + 2 == len(hidden) + 1
    np.testing.assert_allclose(frames[0], cnn[0].numpy(), atol=1e-5)
    for ours, theirs in zip(frames[1:], hidden):
        np.testing.assert_allclose(ours, theirs[0].numpy(), atol=1e-5)
    assert len(log_mel_frames(waveform)) == len(frames[0])  # 25 ms / 20 ms log-mel = the CNN's frame rate


def test_perturbed_copy_depends_only_on_seed_and_utterance_index():
    waveform = torch.randn(16000, generator=torch.Generator().manual_seed(0))
    perturber = make_perturber()
    first, drawn = perturbed_copy(perturber, waveform, seed=5, index=7)
    again, drawn_again = perturbed_copy(make_perturber(), waveform.clone(), seed=5, index=7)
    assert drawn == drawn_again and torch.equal(first, again)
    assert torch.equal(first, perturber.apply(waveform, drawn))  # the copy is the drawn perturbation
    # another index or another seed draws anew: over 24 of them every setting occurs
    by_index = [perturbed_copy(perturber, waveform, seed=5, index=i)[1] for i in range(24)]
    by_seed = [perturbed_copy(perturber, waveform, seed=s, index=7)[1] for s in range(24)]
    for drawn_set in (by_index, by_seed):
        assert {p.speed for p in drawn_set} == {0.9, 1.0, 1.1}
        assert {p.semitones for p in drawn_set} == {-2.0, 2.0}
        assert not any(p.swap for p in drawn_set)  # the analysis compares original -> perturbed
    assert by_index != by_seed


# ---------------------------------------------------------------------------------------------------- CLI


def read_rows(path):
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_cli_compares_an_upstream_with_its_laser_checkpoint_end_to_end(tiny_checkpoints, tmp_path, capsys):
    from laser_fairseq.cli import analyze_layers

    out = tmp_path / "report"
    argv = [
        "--checkpoint", tiny_checkpoints["hubert"], "--compare", tiny_checkpoints["laser"],
        "--upstream", tiny_checkpoints["hubert"],  # the LASER checkpoint's recorded upstream has moved
        "--manifest", DEMO_TRAIN, "--max-utterances", "10", "--seed", "3", "--out", str(out),
    ]
    analyze_layers.main(argv)
    printed = capsys.readouterr()
    for name in ("layers.csv", "layers.md", "layers.png", "deltas.png", "summary.json"):
        assert (out / name).stat().st_size > 0
        assert str(out / name) in printed.out
    assert "encoding utterances" in printed.err
    rows = read_rows(out / "layers.csv")
    assert [row["layer"] for row in rows] == ["cnn", "block0_in", "block1", "block2", "block3"]
    for row in rows:
        for column in ("input_cka", "invariance", "voice_probe", "retrieval_map", "compare_input_cka",
                       "compare_invariance", "compare_voice_probe", "compare_retrieval_map",
                       "delta_invariance", "voice_probe_chance", "retrieval_chance"):
            assert math.isfinite(float(row[column])), (row["layer"], column, row[column])
        assert float(row["delta_input_cka"]) == pytest.approx(
            float(row["compare_input_cka"]) - float(row["input_cka"]), abs=2e-4
        )
    assert float(rows[0]["voice_probe_chance"]) == pytest.approx(0.2)
    # LASER changed blocks 2 and 3 only: everything below is the same network on the same audio
    for row in rows[:3]:
        assert all(float(row[f"delta_{m}"]) == 0.0 for m in ("input_cka", "invariance", "voice_probe", "retrieval_map"))
    assert any(float(rows[-1][f"delta_{m}"]) != 0.0 for m in ("input_cka", "invariance"))
    markdown = (out / "layers.md").read_text()
    assert "| block3 |" in markdown and "LASER checkpoint: 2 trained top blocks, 100 updates" in markdown
    with pytest.raises(SystemExit, match="--force"):  # refuses to overwrite before computing anything
        analyze_layers.main(argv)


def test_cli_reports_label_measures_as_not_available_without_side_files(tiny_checkpoints, tmp_path, capsys):
    from laser_fairseq.cli import analyze_layers

    manifest = tmp_path / "nolabels.tsv"
    with open(DEMO_TRAIN, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    manifest.write_text("\n".join([os.path.join(os.path.dirname(DEMO_TRAIN), "audio")] + lines[1:4]) + "\n")
    out = tmp_path / "report"
    analyze_layers.main(["--checkpoint", tiny_checkpoints["hubert"], "--manifest", str(manifest), "--out", str(out)])
    rows = read_rows(out / "layers.csv")
    assert len(rows) == 5
    assert all(row["voice_probe"] == "n/a" and row["retrieval_map"] == "n/a" for row in rows)
    assert all(math.isfinite(float(row["input_cka"])) and math.isfinite(float(row["invariance"])) for row in rows)
    assert "nolabels.voice not found" in (out / "layers.md").read_text()
    capsys.readouterr()
