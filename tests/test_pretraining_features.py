"""Target features, shards and k-means labels against fairseq's own simple_kmeans scripts (MFCC reader,
shard ranges, ApplyKmeans) and against the analysis' block-by-block forward (HuBERT layers)."""

import importlib.util
import os
import sys
import types

import joblib
import numpy as np
import pytest
import soundfile
import torch

import fairseq
from laser_fairseq.data.audio import read_audio
from laser_fairseq.data.manifest import read_manifest
from laser_fairseq.models.upstream import build_upstream
from laser_fairseq.pretraining import features, kmeans
from laser_fairseq.pretraining.schedule import KmeansSettings
from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint
from laser_fairseq.checkout import REPO

DEMO_TRAIN = os.path.join(REPO, "manifests", "demo", "train.tsv")
SIMPLE_KMEANS = os.path.join(os.path.dirname(fairseq.__file__), "examples", "hubert", "simple_kmeans")


@pytest.fixture(scope="module")
def fairseq_simple_kmeans():
    """fairseq's simple_kmeans modules, loaded from their files under their own names (they import each other
    as top-level modules). Their feature_utils imports npy_append_array at the top for the dumping loop we do
    not call; a placeholder module stands in for that one import."""
    added = [] if "npy_append_array" in sys.modules else ["npy_append_array"]
    if added:
        sys.modules["npy_append_array"] = types.SimpleNamespace(NpyAppendArray=None)
    modules = {}
    try:
        for name in ("feature_utils", "dump_mfcc_feature", "dump_km_label"):
            spec = importlib.util.spec_from_file_location(name, os.path.join(SIMPLE_KMEANS, f"{name}.py"))
            modules[name] = sys.modules[name] = importlib.util.module_from_spec(spec)
            added.append(name)
            spec.loader.exec_module(modules[name])
        yield modules
    finally:
        for name in added:
            del sys.modules[name]


@pytest.fixture(scope="module")
def manifest():
    return read_manifest(DEMO_TRAIN)


def test_mfcc_equals_fairseqs_reader(fairseq_simple_kmeans, manifest):
    theirs = fairseq_simple_kmeans["dump_mfcc_feature"].MfccFeatureReader(16000)
    # fairseq's audio reader goes through torchaudio.sox_effects, gone since torchaudio 2.9: read the file
    # with soundfile instead and keep fairseq's MFCC computation (get_feats) as the reference
    theirs.read_audio = lambda path, ref_len=None: soundfile.read(path, dtype="float32")[0]
    reader = features.MfccReader()
    for entry in manifest.entries[:3]:
        ours = reader(read_audio(entry.path, 16000))
        reference = theirs.get_feats(entry.path).numpy()
        assert ours.shape == reference.shape == (reader.frames(entry.num_samples), 39)
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("samples", [400, 559, 560, 16000, 33333])
def test_mfcc_frame_count(samples):
    waveform = torch.from_numpy(np.random.default_rng(samples).standard_normal(samples).astype(np.float32))
    assert len(features.MfccReader()(waveform)) == features.MfccReader().frames(samples)


def test_shard_ranges_are_fairseqs(fairseq_simple_kmeans):
    for total, nshard in ((65, 3), (65, 8), (10, 10), (1000, 7)):
        ranges = [features.shard_range(total, nshard, rank) for rank in range(nshard)]
        assert ranges == [fairseq_simple_kmeans["feature_utils"].get_shard_range(total, nshard, rank)
                          for rank in range(nshard)]


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("hubert") / "tiny.pt")
    save_checkpoint(make_tiny_hubert(layers=3, dim=32, conv_channels=16), path)
    return path


@pytest.mark.parametrize("layer", [1, 3])
def test_hubert_layer_equals_the_analysis_hidden_state(tiny_hubert, manifest, layer):
    reader = features.HubertLayerReader(tiny_hubert, layer)
    upstream = build_upstream(tiny_hubert).eval()
    for entry in manifest.entries[:2]:
        waveform = read_audio(entry.path, 16000)
        ours = reader(waveform)
        with torch.no_grad():
            _, hidden = upstream.conv_and_hidden_states(waveform[None])
        assert ours.shape == (reader.frames(entry.num_samples), 32)
        np.testing.assert_allclose(ours, hidden[layer][0].numpy(), atol=1e-5)


def test_a_layer_the_model_lacks_is_refused(tiny_hubert):
    with pytest.raises(features.FeatureError, match="blocks 1..3"):
        features.HubertLayerReader(tiny_hubert, 4)


def test_shards_together_equal_one_shard(tmp_path, manifest):
    reader = features.MfccReader()
    one, three = tmp_path / "one", tmp_path / "three"
    written = features.dump_shard(reader, manifest, "train", 0, 1, str(one))
    assert written == ["train_0_1.npy", "train_0_1.len"]
    for rank in range(3):
        features.dump_shard(reader, manifest, "train", rank, 3, str(three))
        assert features.shard_done(str(three), "train", rank, 3)
    whole, lengths = features.open_shard(str(one), "train", 0, 1)
    parts = [features.open_shard(str(three), "train", rank, 3) for rank in range(3)]
    np.testing.assert_array_equal(np.concatenate([frames for frames, _ in parts]), whole)
    assert sum((part_lengths for _, part_lengths in parts), []) == lengths
    assert lengths == [reader.frames(entry.num_samples) for entry in manifest.entries]
    assert sorted(os.listdir(one)) == ["train_0_1.len", "train_0_1.npy"]  # no temporary files left


def test_a_stale_manifest_is_refused_naming_the_line(tmp_path, manifest):
    lines = open(DEMO_TRAIN).read().splitlines()
    path, samples = lines[2].split("\t")
    lines[2] = f"{path}\t{int(samples) + 320}"
    lines[0] = manifest.root
    stale = tmp_path / "train.tsv"
    stale.write_text("\n".join(lines) + "\n")
    with pytest.raises(features.FeatureError, match=rf"train.tsv:3: .*the manifest says {int(samples) + 320}"):
        features.dump_shard(features.MfccReader(), read_manifest(str(stale)), "train", 0, 1, str(tmp_path / "f"))
    assert not os.path.exists(tmp_path / "f" / "train_0_1.npy")


def test_labels_equal_fairseqs_apply_kmeans(tmp_path, fairseq_simple_kmeans, manifest):
    reader = features.MfccReader()
    for rank in range(2):
        features.dump_shard(reader, manifest, "train", rank, 2, str(tmp_path))
    frames, count = kmeans.sample_frames(str(tmp_path), "train", 2, fraction=0.5, seed=3)
    assert count == 16 + 17  # ceil(0.5 * 32) + ceil(0.5 * 33) utterances of the two shards
    fit = kmeans.fit_kmeans(frames, 12, KmeansSettings(n_init=2, batch_size=1000), seed=3)
    assert fit.centroids.shape == (12, 39) and fit.inertia > 0
    model = types.SimpleNamespace(cluster_centers_=fit.centroids)  # what ApplyKmeans reads of the model
    joblib.dump(model, tmp_path / "km.bin")
    apply_kmeans = fairseq_simple_kmeans["dump_km_label"].ApplyKmeans(str(tmp_path / "km.bin"))
    lines = kmeans.label_lines(str(tmp_path), "train", 2, fit.centroids)
    assert len(lines) == len(manifest.entries)
    for rank in range(2):
        shard, lengths = features.open_shard(str(tmp_path), "train", rank, 2)
        offsets = features.utterance_offsets(lengths)
        start = features.shard_range(len(manifest.entries), 2, rank)[0]
        for i in range(len(lengths)):
            theirs = apply_kmeans(np.asarray(shard[offsets[i]:offsets[i + 1]]))
            assert lines[start + i] == " ".join(map(str, theirs))


def test_dictionary_loads_in_fairseq(tmp_path):
    from fairseq.data.dictionary import Dictionary

    (tmp_path / "dict.km.txt").write_text(kmeans.dictionary_text(7))
    dictionary = Dictionary.load(str(tmp_path / "dict.km.txt"))
    assert [dictionary.index(str(k)) for k in range(7)] == list(range(dictionary.nspecial, dictionary.nspecial + 7))
