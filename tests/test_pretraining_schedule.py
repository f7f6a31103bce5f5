"""Pretraining schedules: the presets parse to what they document; every mistake is refused naming the file
and the YAML key (how overrides are written for hydra: tests/test_hydra_command.py)."""

import os

import pytest
import yaml

from laser_fairseq.pretraining.schedule import (
    CONFIG_DIR,
    LAYER,
    MFCC,
    PREVIOUS,
    SCRATCH,
    ScheduleError,
    load_schedule,
    parse_schedule,
)
from laser_fairseq.checkout import REPO

PRESETS = os.path.join(REPO, "examples", "hubert_pretraining")


def preset(name):
    return load_schedule(os.path.join(PRESETS, f"{name}.yaml"))


def test_standard_is_fairseqs_base_recipe():
    schedule = preset("standard")
    first, second = schedule.iterations
    assert (first.target.kind, first.n_clusters, first.max_update, first.init) == (MFCC, 100, 250000, SCRATCH)
    assert (second.target.kind, second.target.layer, second.n_clusters, second.max_update, second.init) == (
        LAYER, 6, 500, 400000, SCRATCH)
    assert (first.target.label_rate, second.target.label_rate) == (100, 50)
    assert first.config_path == os.path.join(CONFIG_DIR, "hubert_base_librispeech.yaml")


def test_progressive_warm_starts_with_rising_clustering_height():
    schedule = preset("progressive")
    later = schedule.iterations[1:]
    assert len(schedule.iterations) > 2 and all(iteration.init == PREVIOUS for iteration in later)
    heights = [iteration.target.layer for iteration in later]
    assert heights == sorted(heights) and len(set(heights)) == len(heights)
    assert schedule.total_updates < preset("standard").total_updates


def test_tiny_schedules_compare_at_equal_total_updates():
    standard, progressive = preset("tiny_standard"), preset("tiny_progressive")
    assert standard.total_updates == progressive.total_updates
    assert len(progressive.iterations) > len(standard.iterations)
    assert os.path.basename(progressive.iterations[0].config_path) == "tiny_cpu.yaml"


VALID = {
    "config": "tiny_cpu",
    "iterations": [
        {"target": "mfcc", "n_clusters": 10, "max_update": 5},
        {"target": {"layer": 2}, "n_clusters": 20, "max_update": 5, "init": "previous"},
    ],
}


def broken(path, edit):
    data = yaml.safe_load(yaml.safe_dump(VALID))
    edit(data)
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(data, str(path))
    return str(caught.value)


def second(key, value):
    return lambda data: data["iterations"][1].__setitem__(key, value)


@pytest.mark.parametrize("edit, key, hint", [
    (lambda d: d.__setitem__("iteration", []), "iteration", "unknown key"),
    (lambda d: d.__setitem__("iterations", []), "iterations", "non-empty list"),
    (lambda d: d["iterations"][0].pop("n_clusters"), "iterations[1].n_clusters", "missing"),
    (lambda d: d["iterations"][0].__setitem__("target", {"layer": 3}), "iterations[1].target.layer", "use 'target: mfcc'"),
    (lambda d: d["iterations"][0].__setitem__("init", "previous"), "iterations[1].init", "use 'scratch'"),
    (second("init", "warm"), "iterations[2].init", "'scratch' or 'previous'"),
    (second("target", "fbank"), "iterations[2].target", "'mfcc' or {layer: L}"),
    (second("target", {"layer": 0}), "iterations[2].target.layer", "integer >= 1"),
    (second("n_clusters", 1), "iterations[2].n_clusters", "integer >= 2"),
    (second("max_update", 2.5), "iterations[2].max_update", "integer >= 1"),
    (second("overrides", {"task.data": "/x"}), "iterations[2].overrides.task.data", "set by the driver"),
    (second("overrides", {"optimization.max_update": 9}), "iterations[2].overrides.optimization.max_update",
     "set by the driver"),
    (second("overrides", {"lr": 1}), "iterations[2].overrides.lr", "dotted fairseq config key"),
    (second("overrides", {"model.dropout": {"a": 1}}), "iterations[2].overrides.model.dropout", "number, string"),
    (second("overrides", {"model.encoder_layers": 6}), "iterations[2].overrides.model.encoder_layers",
     "shape must not change"),
    (second("config", "nonexistent"), "iterations[2].config", "configs in"),
    (second("kmeans", {"sample_fraction": 0}), "iterations[2].kmeans.sample_fraction", "(0, 1]"),
    (second("kmeans", {"n_init": "many"}), "iterations[2].kmeans.n_init", "non-negative int"),
    (second("kmeans", {"clusters": 3}), "iterations[2].kmeans.clusters", "unknown key"),
    (lambda d: d.__setitem__("analysis", {"max_utterances": 0}), "analysis.max_utterances", "integer >= 1"),
    (lambda d: d.__setitem__("feature_shards", 0), "feature_shards", "integer >= 1"),
    (lambda d: d.pop("config"), "iterations[1].config", "set 'config'"),
    (lambda d: d.__setitem__("curve", {"every": 0}), "curve.every", "integer >= 1"),
    (lambda d: d.__setitem__("curve", {"each": 5}), "curve.each", "unknown key"),
    (lambda d: d.update(curve={"every": 5}, analysis={"enabled": False}), "curve.every", "analysis.enabled: true"),
    (lambda d: d.update(curve={"every": 5}, overrides={"checkpoint.save_interval_updates": 7}),
     "overrides.checkpoint.save_interval_updates", "set by the driver when curve.every is set"),
    (lambda d: (d.__setitem__("curve", {"every": 5}), second("overrides", {"checkpoint.keep_interval_updates": 2})(d)),
     "iterations[2].overrides.checkpoint.keep_interval_updates", "set by the driver when curve.every is set"),
])
def test_mistakes_name_the_file_and_key(tmp_path, edit, key, hint):
    path = tmp_path / "schedule.yaml"
    message = broken(path, edit)
    assert message.startswith(f"{path}: {key}: "), message
    assert hint in message


def test_unreadable_files(tmp_path):
    with pytest.raises(ScheduleError, match="not found"):
        load_schedule(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: [\n")
    with pytest.raises(ScheduleError, match="not valid YAML"):
        load_schedule(str(bad))


def test_config_path_relative_to_the_schedule(tmp_path):
    (tmp_path / "mine.yaml").write_text("# @package _group_\n")
    data = dict(VALID, config="mine.yaml")
    schedule = parse_schedule(data, str(tmp_path / "schedule.yaml"))
    assert schedule.iterations[0].config_path == str(tmp_path / "mine.yaml")


def test_the_curve_is_off_unless_asked_and_the_interval_keys_are_free_without_it():
    assert parse_schedule(VALID, "/x/s.yaml").curve.every is None
    assert parse_schedule(dict(VALID, curve={"every": 50}), "/x/s.yaml").curve.every == 50
    data = dict(VALID, overrides={"checkpoint.save_interval_updates": 7, "checkpoint.keep_interval_updates": 2})
    assert parse_schedule(data, "/x/s.yaml").iterations[0].overrides["checkpoint.save_interval_updates"] == 7


def test_iteration_overrides_merge_over_the_schedules():
    data = dict(VALID, overrides={"optimization.lr": [0.001], "model.dropout": 0.0})
    data["iterations"] = [dict(VALID["iterations"][0], overrides={"model.dropout": 0.2}), VALID["iterations"][1]]
    first, second_iteration = parse_schedule(data, "/x/s.yaml").iterations
    assert first.overrides == {"optimization.lr": [0.001], "model.dropout": 0.2}
    assert second_iteration.overrides == {"optimization.lr": [0.001], "model.dropout": 0.0}
