"""The quality curve's arithmetic (laser_fairseq/pretraining/curve.py) on hand-made runs with known answers;
the curve of real runs through the driver: tests/test_pretraining_run.py."""

import json
import os

import pytest

from laser_fairseq.pretraining import curve
from laser_fairseq.pretraining.training import TrainingError


def layers(*phone_acc, top_cka=0.5):
    names = ["cnn", "block0_in", "block1", "block2"][: len(phone_acc)]
    out = [{"index": i, "name": n, "phone_acc": a, "input_cka": 0.9} for i, (n, a) in enumerate(zip(names, phone_acc))]
    out[-1]["input_cka"] = top_cka
    return out


def run(schedule, seed, best_by_updates, iteration_of=lambda u: "iter1" if u <= 20 else "iter2", cka=None):
    """A summary whose curve has, at each total update count, one layer at the given best phone accuracy."""
    cka = cka or {}
    points = [{"iteration": iteration_of(u), "updates": u, "total_updates": u, "targets_pnmi": 0.5,
               "layers": layers(0.1, best, 0.2, top_cka=cka.get(u, 0.5))} for u, best in best_by_updates.items()]
    return {"schedule": schedule, "seed": seed, "run_dir": f"/runs/{schedule}-{seed}", "curve": points}


def test_points_are_the_kept_checkpoints_below_the_final_model():
    assert curve.point_updates(1000, 250) == [250, 500, 750]
    assert curve.point_updates(1000, 300) == [300, 600, 900]
    assert curve.point_updates(100, 100) == [] and curve.point_updates(100, 500) == []


def test_the_kept_checkpoint_is_found_by_its_update_count(tmp_path):
    for name in ("checkpoint_1_200.pt", "checkpoint_2_400.pt", "checkpoint_last.pt", "checkpoint_1_2000.pt"):
        (tmp_path / name).write_bytes(b"")
    assert curve.interval_checkpoint(str(tmp_path), 400) == str(tmp_path / "checkpoint_2_400.pt")
    with pytest.raises(TrainingError, match=r"no checkpoint_<epoch>_600.pt for the curve \(kept: \[200, 400, 2000\]\)"):
        curve.interval_checkpoint(str(tmp_path), 600)


def test_statistics_over_seeds():
    assert curve.best_layer(layers(0.1, 0.7, 0.3), "phone_acc")["name"] == "block0_in"
    assert curve.best_layer([{"name": "x", "phone_acc": None}], "phone_acc") is None
    assert curve.first_reaching({30: 0.6, 10: 0.3, 20: 0.5}, 0.5) == 20
    assert curve.first_reaching({10: 0.3}, 0.5) is None
    runs = [run("a", 1, {10: 0.4, 20: 0.6}), run("a", 2, {10: 0.6, 20: 0.8, 30: 0.9})]
    means = curve.mean_series(runs, curve.best_value)
    assert list(means) == [10, 20]  # the points every seed has
    assert means[10][0] == pytest.approx(0.5) and means[10][1] == pytest.approx(0.1414213562)
    assert curve.mean_std([0.3]) == (0.3, None)


def test_the_comparison_says_when_each_seed_reaches_the_other_schedules_final_quality(tmp_path):
    standard = [run("standard", 1, {10: 0.4, 20: 0.5, 30: 0.6, 40: 0.7}),
                run("standard", 2, {10: 0.4, 20: 0.5, 30: 0.55, 40: 0.5})]
    progressive = [run("progressive", 1, {10: 0.5, 20: 0.6, 30: 0.61, 40: 0.62}, cka={10: 0.4, 20: 0.3, 30: 0.35}),
                   run("progressive", 2, {10: 0.45, 20: 0.58, 30: 0.7, 40: 0.72}, cka={10: 0.6, 20: 0.5, 30: 0.45})]
    text = "\n".join(curve.comparison_markdown(standard + progressive))
    assert "| standard | 1, 2 | 40 | 0.600 ± 0.141 | 0.500 ± 0.000 |" in text
    assert "| progressive | 1, 2 | 40 | 0.670 ± 0.071 | 0.500 ± 0.000 |" in text
    assert "- progressive reaches standard's mean final quality (0.600) at updates: seed 1: 20, seed 2: 30 (of 40)." in text
    assert "- standard reaches progressive's mean final quality (0.670) at updates: seed 1: 40, seed 2: not reached (of 40)." in text
    assert "| progressive | iter1 | 10 → 20 | 0.500 ± 0.141 | 0.400 ± 0.141 |" in text  # top block's likeness
    assert "| progressive | iter2 | 30 → 40 | 0.400 ± 0.071 | 0.500 ± 0.000 |" in text
    assert [curve.run_label(s, standard + progressive) for s in standard] == ["standard (seed 1)", "standard (seed 2)"]
    assert curve.run_label(standard[0], standard[:1] + progressive) == "standard"
    assert curve.run_label(standard[0], [standard[0], dict(standard[1], seed=1)]) == "standard (standard-1)"
    rows = curve.comparison_csv(standard).splitlines()
    assert "standard,2,iter2,30,30,block0_in,best_phone_acc,0.55" in rows
    path = str(tmp_path / "curve.png")
    curve.plot_comparison(path, standard + progressive, {"log_mel": {"phone_acc": 0.6}})
    assert os.path.getsize(path) > 0
    assert curve.comparison_markdown([{"schedule": "x", "curve": []}]) == []


def test_the_collected_points_are_those_the_stamps_record_not_those_the_schedule_would_give_now(tmp_path):
    """A finished two-iteration run whose schedule was then given longer iterations (not run yet, e.g.
    stopped with --stop-after before its training): the report shows what was measured, at the updates trained."""
    from types import SimpleNamespace

    def stage_dir(iteration, stage):
        return str(tmp_path / iteration / stage)

    def analysed(directory, acc):
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "analysis.json"), "w") as handle:
            json.dump({"layers": layers(acc)}, handle)

    stamps = {"iter1.curve": {"record": {"points": [10, 20]}}, "iter1.train": {"record": {"updates": 30}},
              "iter1.analysis": {}, "iter2.curve": {"record": {"points": [10]}},
              "iter2.train": {"record": {"updates": 40}}, "iter2.analysis": {}}
    for name, acc in (("iter1", 0.3), ("iter2", 0.5)):
        analysed(stage_dir(name, "analysis"), acc)
    for name, updates, acc in (("iter1", 10, 0.1), ("iter1", 20, 0.2), ("iter2", 10, 0.4)):
        analysed(curve.point_dir(stage_dir(name, "curve"), updates), acc)
    schedule = SimpleNamespace(curve=SimpleNamespace(every=10), iterations=[
        SimpleNamespace(name="iter1", max_update=50), SimpleNamespace(name="iter2", max_update=100)])
    points = curve.collect_points(schedule, stage_dir, stamps.get, {"iter1": 0.5, "iter2": 0.6}.get)
    assert [(p["iteration"], p["updates"], p["total_updates"], p["layers"][0]["phone_acc"], p["targets_pnmi"])
            for p in points] == [("iter1", 10, 10, 0.1, 0.5), ("iter1", 20, 20, 0.2, 0.5), ("iter1", 30, 30, 0.3, 0.5),
                                 ("iter2", 10, 40, 0.4, 0.6), ("iter2", 40, 70, 0.5, 0.6)]
    # iteration 2 not analysed yet: only iteration 1's points
    del stamps["iter2.curve"], stamps["iter2.analysis"]
    assert [p["total_updates"] for p in curve.collect_points(schedule, stage_dir, stamps.get)] == [10, 20, 30]
