"""Bad inputs give errors that name the file / line / key and say what to do, and leave nothing half-written."""

import fractions
import locale
import logging
import math
import os
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from laser_fairseq.checkpoint_io import CheckpointError, load_checkpoint
from laser_fairseq.data.audio import AudioError, load_samples, read_audio
from laser_fairseq.data.manifest import ManifestError, read_manifest
from laser_fairseq.data.prepare import check_audio_file
from laser_fairseq.demo import demo_train_command
from laser_fairseq.models.laser_model import LaserModel, LaserModelConfig
from laser_fairseq.tasks.laser_task import LaserTask, LaserTaskConfig
from laser_fairseq.tiny_upstream import conv_spec, make_tiny_hubert, save_checkpoint
from laser_fairseq.checkout import REPO

DEMO_AUDIO = os.path.join(REPO, "manifests", "demo", "audio")
GOOD_FLAC = os.path.join(DEMO_AUDIO, "s01_v1.flac")


def demo_line(name: str) -> str:
    """The manifest line of a committed demo file: its name and its true number of samples."""
    return f"{name}\t{sf.info(os.path.join(DEMO_AUDIO, name)).frames}"


GOOD_LINE = demo_line("s01_v1.flac")
CNN_RECEPTIVE_FIELD = 400  # samples: kernels (10,5), (3,2) x4, (2,2) x2 of HuBERT / WavLM


# ----------------------------------------------------------------------------------------------- helpers


def write_manifest(folder, lines, name="train.tsv", root="audio"):
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "w") as handle:
        handle.write("\n".join([root] + lines) + "\n")
    return path


def good_wav():
    wav, _ = sf.read(GOOD_FLAC, dtype="float32")
    return wav


def make_task(data, min_sample_size=8000):
    return LaserTask(LaserTaskConfig(data=str(data), seed=1, train_subset="train", min_sample_size=min_sample_size))


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("upstreams") / "tiny_hubert.pt")
    save_checkpoint(make_tiny_hubert(), path)
    return path


@pytest.fixture(scope="module")
def laser_model(tiny_hubert):
    return LaserModel.build_model(LaserModelConfig(upstream_path=tiny_hubert, trainable_layers=2))


# ----------------------------------------------------------------------------------------------- manifests


@pytest.mark.parametrize(
    "line, expected",
    [
        ("s01_v1.flac", r"expected 'relative/path<TAB>num_samples', got 1 tab-separated field"),
        ("s01_v1.flac\tmany", r"num_samples must be an integer, got 'many'"),
        ("s01_v1.flac\t-5", r"num_samples must be positive"),
        ("missing.flac\t16000", r"audio file .*missing.flac does not exist .* fix the path or regenerate"),
    ],
)
def test_malformed_manifest_lines_name_file_and_line(tmp_path, line, expected):
    os.makedirs(tmp_path / "audio")
    shutil.copy(GOOD_FLAC, tmp_path / "audio")
    path = write_manifest(str(tmp_path), [GOOD_LINE, line])
    with pytest.raises(ManifestError, match=rf"{path}:3: {expected}"):
        read_manifest(path)


def test_manifest_without_root_or_lines_is_refused(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    with pytest.raises(ManifestError, match=rf"{empty}:1: the first line must be the audio root"):
        read_manifest(str(empty))
    only_root = tmp_path / "root.tsv"
    only_root.write_text(f"{tmp_path}\n")
    with pytest.raises(ManifestError, match=rf"{only_root}: no audio lines"):
        read_manifest(str(only_root))
    with pytest.raises(ManifestError, match="manifest not found. Write one with scripts/prepare_librispeech.py"):
        read_manifest(str(tmp_path / "nope.tsv"))


def test_every_bad_line_is_counted_and_the_first_ones_are_shown(tmp_path):
    os.makedirs(tmp_path / "audio")
    path = write_manifest(str(tmp_path), [f"gone{i}.flac\t16000" for i in range(7)] + ["two\tfields\there"])
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: 8 bad lines:") and message.endswith("... and 3 more")
    assert f"{path}:2: audio file {tmp_path}/audio/gone0.flac does not exist" in message


@pytest.mark.parametrize("bad", [2, 5, 6])
def test_the_summary_of_bad_lines_shows_five_in_full_then_counts_the_rest(tmp_path, bad):
    os.makedirs(tmp_path / "audio")
    path = write_manifest(str(tmp_path), [f"gone{i}.flac\t16000" for i in range(bad)])
    with pytest.raises(ManifestError) as caught:
        read_manifest(path)
    shown = [f"{path}:{i + 2}: audio file {tmp_path}/audio/gone{i}.flac does not exist" for i in range(min(bad, 5))]
    lines = str(caught.value).split("\n  ")
    assert lines[0] == f"{path}: {bad} bad lines:"
    assert [line.split(" (root line")[0] for line in lines[1:6]] == shown
    assert lines[6:] == (["... and 1 more"] if bad == 6 else [])
    assert all(line.endswith("fix the path or regenerate the manifest") for line in lines[1:6])


def test_a_manifest_is_read_whole_with_its_root_blank_lines_and_utf8_names(tmp_path):
    os.makedirs(tmp_path / "audio")
    for name in ("première.flac", "b.flac", "c.flac"):
        shutil.copy(GOOD_FLAC, tmp_path / "audio" / name)
    path = tmp_path / "train.tsv"
    path.write_bytes("audio\npremière.flac\t1\n\nb.flac\t32993\n  \nc.flac\t2\n".encode("utf-8"))
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # an ASCII locale: the manifest is UTF-8 whatever the locale says
    try:
        manifest = read_manifest(str(path))
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)
    assert manifest.root == str(tmp_path / "audio") and manifest.path == str(path)
    assert [(os.path.basename(e.path), e.num_samples, e.line) for e in manifest.entries] == [
        ("première.flac", 1, 2), ("b.flac", 32993, 4), ("c.flac", 2, 6)
    ]


def test_zero_samples_is_refused_and_one_is_accepted(tmp_path):
    os.makedirs(tmp_path / "audio")
    shutil.copy(GOOD_FLAC, tmp_path / "audio")
    with pytest.raises(ManifestError, match=r":2: num_samples must be positive, got 0"):
        read_manifest(write_manifest(str(tmp_path), ["s01_v1.flac\t0"]))
    assert read_manifest(write_manifest(str(tmp_path), ["s01_v1.flac\t1"])).entries[0].num_samples == 1


def test_an_unreadable_file_without_a_place_is_named_alone(tmp_path):
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"fLaC but nothing else")
    with pytest.raises(AudioError, match=rf"^cannot read audio file {broken}: "):
        load_samples(str(broken))


def test_a_root_line_that_is_not_a_directory_is_named(tmp_path):
    path = write_manifest(str(tmp_path), [GOOD_LINE], root="no_such_folder")
    with pytest.raises(ManifestError, match=rf"{path}:1: the audio root {tmp_path}/no_such_folder is not a directory"):
        read_manifest(path)


def test_the_task_reports_a_bad_manifest_before_building_anything(tmp_path):
    os.makedirs(tmp_path / "audio")
    write_manifest(str(tmp_path), ["s01_v1.flac 32993"])  # space instead of a tab
    with pytest.raises(ManifestError, match=r"train.tsv:2: expected 'relative/path<TAB>num_samples'"):
        make_task(tmp_path).load_dataset("train")


# ----------------------------------------------------------------------------------------------- audio


def _bad_audio_files():
    """name -> (writer(path), fragment of the expected message)."""
    wav = good_wav()
    with_nan, with_inf = wav.copy(), wav.copy()
    with_nan[10] = np.nan
    with_inf[20] = np.inf
    return {
        "corrupt.flac": (lambda p: open(p, "wb").write(open(GOOD_FLAC, "rb").read(80) + b"\x00garbage" * 64),
                         r"cannot read audio file .*\(re-download or re-convert it\)"),
        "zero_bytes.flac": (lambda p: open(p, "wb").close(), "cannot read audio file"),
        "rate_8k.flac": (lambda p: sf.write(p, wav[::2], 8000), r"sample rate is 8000 Hz, expected 16000 Hz; resample"),
        "stereo.flac": (lambda p: sf.write(p, np.stack([wav, wav], 1), 16000), "has 2 channels, expected mono; downmix"),
        "empty.wav": (lambda p: sf.write(p, np.zeros((0, 1), np.float32), 16000), r"is empty \(0 samples\); remove it"),
        "silent.flac": (lambda p: sf.write(p, np.zeros(16000, np.float32), 16000), "is all silence .*; remove it"),
        "nan.wav": (lambda p: sf.write(p, with_nan, 16000, subtype="FLOAT"), "contains 1 NaN or infinite sample"),
        "inf.wav": (lambda p: sf.write(p, with_inf, 16000, subtype="FLOAT"), "contains 1 NaN or infinite sample"),
    }


BAD_AUDIO = _bad_audio_files()


@pytest.mark.parametrize("name", sorted(BAD_AUDIO))
def test_bad_audio_names_manifest_line_file_and_fix(tmp_path, name):
    write, expected = BAD_AUDIO[name]
    os.makedirs(tmp_path / "audio")
    shutil.copy(GOOD_FLAC, tmp_path / "audio")
    write(str(tmp_path / "audio" / name))
    manifest = write_manifest(str(tmp_path), [GOOD_LINE, f"{name}\t16000"])
    task = make_task(tmp_path)
    task.load_dataset("train")
    dataset = task.datasets["train"]
    dataset[0]
    with pytest.raises(AudioError, match=rf"{manifest}:3: .*{expected}") as caught:
        dataset[1]
    assert name in str(caught.value)


def test_read_audio_alone_names_the_file(tmp_path):
    path = str(tmp_path / "stereo.flac")
    sf.write(path, np.stack([good_wav()] * 2, 1), 16000)
    with pytest.raises(AudioError, match=rf"^{path}: has 2 channels"):
        read_audio(path, 16000)


# ----------------------------------------------------------------------------------------------- too short


def test_short_utterances_are_left_out_counted_and_logged(tmp_path, caplog):
    os.makedirs(tmp_path / "audio")
    shutil.copy(GOOD_FLAC, tmp_path / "audio")
    sf.write(str(tmp_path / "audio" / "short.flac"), good_wav()[8000 : 8000 + 300], 16000)
    manifest = write_manifest(str(tmp_path), [GOOD_LINE, "short.flac\t300", "short.flac\t300"])
    task = make_task(tmp_path)
    with caplog.at_level(logging.WARNING):
        task.load_dataset("train")
    assert len(task.datasets["train"]) == 1
    assert f"{manifest}: left out 2 of 3 utterances shorter than min_sample_size=8000" in caplog.text


def test_a_split_with_only_short_utterances_says_which_option_to_change(tmp_path):
    os.makedirs(tmp_path / "audio")
    sf.write(str(tmp_path / "audio" / "short.flac"), good_wav()[8000 : 8000 + 300], 16000)
    write_manifest(str(tmp_path), ["short.flac\t300"])
    with pytest.raises(ValueError, match="every utterance is shorter than min_sample_size=8000; lower task.min_sample_size"):
        make_task(tmp_path).load_dataset("train")


def test_a_min_sample_size_below_the_receptive_field_after_speed_up_is_refused(tmp_path):
    os.makedirs(tmp_path / "audio")
    shutil.copy(GOOD_FLAC, tmp_path / "audio")
    write_manifest(str(tmp_path), [GOOD_LINE])
    needed = math.ceil(CNN_RECEPTIVE_FIELD * 1.1)  # the default speed factors go up to 1.1
    with pytest.raises(ValueError, match=rf"min_sample_size={needed - 1} is too small: .* at least {needed} samples"):
        make_task(tmp_path, min_sample_size=needed - 1).load_dataset("train")
    make_task(tmp_path, min_sample_size=needed).load_dataset("train")


def test_the_shortest_accepted_item_runs_through_the_model_in_both_views(tmp_path, laser_model):
    """An utterance of exactly min_sample_size samples, sped up by the largest factor, still gives frames;
    one sample fewer is left out. The manifest tool draws the line at the same place."""
    needed = math.ceil(CNN_RECEPTIVE_FIELD * 1.1)
    os.makedirs(tmp_path / "audio")
    for name, length in (("shortest.flac", needed), ("too_short.flac", needed - 1)):
        sf.write(str(tmp_path / "audio" / name), good_wav()[8000 : 8000 + length], 16000)
        kept, problem = check_audio_file(str(tmp_path / "audio" / name), 16000, min_samples=needed)
        assert kept == length and (problem == "") == (length == needed), problem
    write_manifest(str(tmp_path), [f"shortest.flac\t{needed}", f"too_short.flac\t{needed - 1}"])
    task = LaserTask(LaserTaskConfig(data=str(tmp_path), seed=1, train_subset="train", min_sample_size=needed,
                                     speed_factors=[1.1]))
    task.load_dataset("train")
    dataset = task.datasets["train"]
    assert [entry.num_samples for entry in dataset.entries] == [needed]
    item = dataset[0]
    sped_up = min(len(item["view_a"]), len(item["view_b"]))
    assert max(len(item["view_a"]), len(item["view_b"])) == needed and CNN_RECEPTIVE_FIELD <= sped_up < needed
    laser_model.eval()
    with torch.no_grad():
        out = laser_model(**dataset.collater([item])["net_input"])
    assert out["lengths_a"].tolist() == [1] == out["lengths_b"].tolist()


def test_a_manifest_claiming_more_samples_than_the_file_has_is_reported(tmp_path):
    os.makedirs(tmp_path / "audio")
    sf.write(str(tmp_path / "audio" / "short.flac"), good_wav()[8000 : 8000 + 300], 16000)
    manifest = write_manifest(str(tmp_path), ["short.flac\t32000"])
    task = make_task(tmp_path)
    task.load_dataset("train")
    with pytest.raises(AudioError, match=rf"{manifest}:2: .*300 samples.*32000"):
        task.datasets["train"][0]


def test_the_cnn_front_end_needs_400_samples(laser_model):
    """What the filters above protect: the tiny model has HuBERT's real kernels and strides."""
    laser_model.eval()
    with torch.no_grad():
        out = laser_model(torch.randn(1, CNN_RECEPTIVE_FIELD), torch.randn(1, CNN_RECEPTIVE_FIELD))
        assert out["z_a"].shape[1] == 1
        with pytest.raises(RuntimeError):
            laser_model(torch.randn(1, CNN_RECEPTIVE_FIELD - 1), torch.randn(1, CNN_RECEPTIVE_FIELD - 1))


# ----------------------------------------------------------------------------------------------- checkpoints


def make_tiny_wav2vec2(path):
    """A small wav2vec 2.0 checkpoint built with fairseq's own model and saved the way fairseq's trainer does."""
    from fairseq.dataclass.configs import FairseqConfig
    from fairseq.models.wav2vec.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model
    from fairseq.tasks.audio_pretraining import AudioPretrainingConfig
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(FairseqConfig())
    cfg.model = OmegaConf.structured(Wav2Vec2Config(
        encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
        conv_feature_layers=conv_spec(16), final_dim=16, latent_vars=8, latent_dim=16, conv_pos=16, conv_pos_groups=4,
    ))
    cfg.model._name = "wav2vec2"
    cfg.task = OmegaConf.structured(AudioPretrainingConfig(data="/nonexistent"))
    cfg.task._name = "audio_pretraining"
    model = Wav2Vec2Model.build_model(cfg.model)
    torch.save({
        "args": None,
        "cfg": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "model": model.state_dict(),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "Wav2vecCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": None}, "num_updates": 0}],
        "task_state": {},
        "extra_state": {"metrics": {}, "previous_training_time": 0.0},
        "last_optimizer_state": None,
    }, path)


def build(path, trainable_layers=2, extra_safe_globals=()):
    return LaserModel.build_model(LaserModelConfig(
        upstream_path=str(path), trainable_layers=trainable_layers, extra_safe_globals=list(extra_safe_globals)
    ))


def test_a_wav2vec2_checkpoint_is_named_as_such(tmp_path):
    from fairseq import checkpoint_utils

    path = str(tmp_path / "wav2vec2_tiny.pt")
    make_tiny_wav2vec2(path)
    models, _, _ = checkpoint_utils.load_model_ensemble_and_task([path])  # a genuine fairseq checkpoint
    assert type(models[0]).__name__ == "Wav2Vec2Model"
    with pytest.raises(CheckpointError, match=rf"{path}: this is a wav2vec 2.0 checkpoint; LASER fine-tunes original HuBERT"):
        build(path)


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("random.pkl", lambda: pickle.dumps({"weights": [1.0, 2.0]}), r"not a readable torch checkpoint \(torch's weights-only reader stopped at: Unsupported operand"),
        ("notes.pt", lambda: b"hello world\n", r"not a readable torch checkpoint \(KeyError"),
        ("empty.pt", lambda: b"", r"the file is empty \(0 bytes\); if it is a truncated"),
    ],
)
def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(CheckpointError, match=rf"{path}: {expected}.*LASER expects an original fairseq HuBERT"):
        build(path)


def test_a_torch_file_without_model_weights_is_refused(tmp_path):
    path = tmp_path / "dict.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match=rf"{path}: no 'model' state dict: not a fairseq or unilm checkpoint"):
        build(path)


def test_a_truncated_checkpoint_says_fetch_it_again(tmp_path, tiny_hubert):
    data = open(tiny_hubert, "rb").read()
    path = tmp_path / "half.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path}: not a readable torch checkpoint \(RuntimeError: .*\); "
                                             r"if it is a truncated or corrupt copy .* fetch it again"):
        build(path)


def test_a_non_allow_listed_global_is_named_with_how_to_proceed(tmp_path):
    state = make_tiny_hubert()
    state["extra_state"]["note"] = fractions.Fraction(1, 3)
    path = str(tmp_path / "with_fraction.pt")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=rf"{path}: the checkpoint pickles fractions.Fraction, which is not on "
                                             r"laser-fairseq's allow-list.* '\+\+model.extra_safe_globals=\[fractions.Fraction\]' to the "
                                             r"fairseq-hydra-train command"):
        build(path)
    model = build(path, extra_safe_globals=["fractions.Fraction"])  # the advice works
    assert model.upstream.num_layers == 4
    with pytest.raises(CheckpointError, match="cannot import 'nowhere.Thing' named in extra_safe_globals"):
        load_checkpoint(path, ["nowhere.Thing"])


@pytest.mark.parametrize("layers", [0, -1, 5])
def test_trainable_layers_out_of_range_names_the_key_and_the_range(tiny_hubert, layers):
    with pytest.raises(CheckpointError, match=rf"model.trainable_layers={layers} is out of range: .* has 4 transformer "
                                             r"blocks, so it must be between 1 and 4"):
        build(tiny_hubert, trainable_layers=layers)


# ----------------------------------------------------------------------------------------------- through fairseq-hydra-train


def hydra_train(upstream, run_dir, data, overrides=()):
    command = demo_train_command(upstream, run_dir, 2, ["dataset.disable_validation=true", *overrides], data=data)
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def checkpoints_written(run_dir):
    folder = os.path.join(run_dir, "checkpoints")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_fairseq_hydra_train_stops_with_the_message_and_writes_no_checkpoint(tmp_path, tiny_hubert):
    """Real runs side by side: trainable_layers out of range, a corrupt file in the first batch, and the
    allow-list advice of a checkpoint with an unknown global followed on the command line."""
    data = tmp_path / "data"
    os.makedirs(data / "audio")
    for name in ("s01_v1.flac", "s02_v1.flac"):
        shutil.copy(os.path.join(DEMO_AUDIO, name), data / "audio")
    (data / "audio" / "broken.flac").write_bytes(b"\x00" * 50_000)
    write_manifest(str(data), [GOOD_LINE, "broken.flac\t40000", demo_line("s02_v1.flac")])
    write_manifest(str(data), [GOOD_LINE], name="valid.tsv")
    layers_dir, audio_dir = str(tmp_path / "layers"), str(tmp_path / "audio_run")
    state = make_tiny_hubert()
    state["extra_state"]["note"] = fractions.Fraction(1, 3)
    with_global, advice_dir = str(tmp_path / "with_fraction.pt"), str(tmp_path / "advice_run")
    torch.save(state, with_global)
    runs = [
        hydra_train(tiny_hubert, layers_dir, os.path.join(REPO, "manifests", "demo"), ["model.trainable_layers=5"]),
        hydra_train(tiny_hubert, audio_dir, str(data)),
        hydra_train(with_global, advice_dir, os.path.join(REPO, "manifests", "demo"),
                    ["++model.extra_safe_globals=[fractions.Fraction]", "optimization.max_update=1"]),
    ]
    (layers_output, _), (audio_output, _), (advice_output, _) = [run.communicate(timeout=300) for run in runs]
    assert runs[2].returncode == 0, advice_output[-3000:]
    assert checkpoints_written(advice_dir) == ["checkpoint_last.pt"]
    assert runs[0].returncode != 0
    assert "model.trainable_layers=5 is out of range" in layers_output and "between 1 and 4" in layers_output
    assert checkpoints_written(layers_dir) == []
    assert runs[1].returncode != 0
    assert f"{data}/train.tsv:3: cannot read audio file {data}/audio/broken.flac" in audio_output, audio_output[-3000:]
    assert checkpoints_written(audio_dir) == []
