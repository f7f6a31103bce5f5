"""The pretraining driver end to end on the demo corpus, with a very small two-iteration schedule (MFCC
targets, then layer-1 targets with a warm start), through scripts/pretrain_hubert.py and fairseq-hydra-train:

- a run killed with SIGKILL during iteration 2's training and re-run with the same command does not redo
  iteration 1 (nor iteration 2's features, k-means and labels), resumes training from checkpoint_last.pt and
  ends with the same final weights, bit for bit, as an uninterrupted run (both run side by side, one thread
  each; hubert_resumable draws the masks from per-update seeds);
- every iteration's checkpoint loads in fairseq's loader, our build_upstream and s3prl's hubert_local, which
  agree on the hidden states; summary.json lists them;
- the warm start carries iteration 1's trunk over exactly and gives the new label set a new head;
- a changed setting is refused with the stage to force;
- the curve (``curve.every``): the checkpoint fairseq kept every few updates analysed like a final model, the
  resumed run's curve equal to the uninterrupted run's, a curve stage killed between two points resumed at
  the missing one.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from laser_fairseq.checkpoint_io import SAFE_GLOBALS, load_checkpoint
from laser_fairseq.data.manifest import read_manifest
from laser_fairseq.models.upstream import build_upstream
from laser_fairseq.checkout import REPO

DEMO = os.path.join(REPO, "manifests", "demo")
DRIVER = os.path.join(REPO, "scripts", "pretrain_hubert.py")
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
SAVE_EVERY = 3
UPDATES = 6
KILL_MARKER = re.compile(rf"Saved checkpoint \S+ \(epoch \d+ @ {SAVE_EVERY} updates")
SCHEDULE = {
    "config": "tiny_cpu",
    "seed": 3,
    "feature_shards": 2,
    "overrides": {
        "model.encoder_layers": 2, "model.encoder_embed_dim": 32, "model.encoder_ffn_embed_dim": 64,
        "model.encoder_attention_heads": 2, "model.conv_pos": 16, "model.conv_pos_groups": 4,
        "model.final_dim": 16, "model.conv_feature_layers": "[(16,10,5)] + [(16,3,2)] * 4 + [(16,2,2)] * 2",
        "dataset.max_tokens": 64000, "dataset.validate_interval_updates": SAVE_EVERY, "common.log_interval": 1,
    },
    "kmeans": {"n_init": 1, "batch_size": 500},
    "analysis": {"split": "valid", "max_utterances": 6, "probe_train_utterances": 20},
    "curve": {"every": SAVE_EVERY},  # the driver then saves (and keeps) a checkpoint every SAVE_EVERY updates
    "iterations": [
        {"target": "mfcc", "n_clusters": 8, "max_update": UPDATES, "init": "scratch"},
        {"target": {"layer": 1}, "n_clusters": 10, "max_update": UPDATES, "init": "previous"},
    ],
}


def stand_in_phones(directory: str):
    """Deterministic frame labels for the demo corpus (it has none): 'sil' for the first and last 10 frames,
    the transcript's letters spread evenly in between (one label per 50 Hz frame, the CNN's frame count),
    and their dict.phn.txt."""
    counts = {}
    for split in ("train", "valid"):
        manifest = read_manifest(os.path.join(directory, f"{split}.tsv"))
        letters = [line.replace("|", "").split() for line in open(os.path.join(directory, f"{split}.ltr"))]
        lines = []
        for entry, word in zip(manifest.entries, letters):
            frames = (entry.num_samples - 400) // 320 + 1
            inner = frames - 20
            lines.append(" ".join(["sil"] * 10 + [word[i * len(word) // inner] for i in range(inner)] + ["sil"] * 10))
            for symbol in lines[-1].split():
                counts[symbol] = counts.get(symbol, 0) + 1
        with open(os.path.join(directory, f"{split}.phn"), "w") as handle:
            handle.write("\n".join(lines) + "\n")
    with open(os.path.join(directory, "dict.phn.txt"), "w") as handle:
        handle.write("".join(f"{symbol} {count}\n" for symbol, count in sorted(counts.items())))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("corpus") / "demo")
    shutil.copytree(DEMO, directory)
    stand_in_phones(directory)
    return directory


def write_schedule(path, schedule=SCHEDULE):
    with open(path, "w") as handle:
        yaml.safe_dump(schedule, handle, sort_keys=False)
    return str(path)


def start(schedule, corpus, out, log_path):
    command = [sys.executable, DRIVER, "--schedule", schedule, "--data", corpus, "--out", str(out)]
    log = open(log_path, "w")
    process = subprocess.Popen(command, cwd=REPO, env=dict(os.environ, **ONE_THREAD), stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return process


def finish(process, log_path, timeout=900):
    process.wait(timeout=timeout)
    output = open(log_path).read()
    assert process.returncode == 0, output[-4000:]
    return output


def kill_when_logged(process, watched_log, timeout=900):
    """SIGKILL the driver's process group (driver + fairseq-hydra-train) once ``watched_log`` has the marker."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(watched_log) and KILL_MARKER.search(open(watched_log).read()):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return
        assert process.poll() is None, "the driver ended before iteration 2 saved its first checkpoint"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"no save logged in {watched_log} after {timeout} s")


def stamp(run, stage):
    iteration, name = stage.split(".") if "." in stage else (None, stage)
    path = os.path.join(run, *([iteration] if iteration else []), name, "stamp.json")
    return json.load(open(path))


def updates_in(checkpoint):
    return load_checkpoint(checkpoint)["optimizer_history"][-1]["num_updates"]


ITERATION_1 = [f"iter1.{stage}" for stage in ("features", "kmeans", "labels", "train", "analysis", "curve")]
BEFORE_TRAINING_2 = [f"iter2.{stage}" for stage in ("features", "kmeans", "labels")]


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """An uninterrupted run and a run killed in iteration 2's training and resumed, side by side."""
    root = tmp_path_factory.mktemp("runs")
    schedule = write_schedule(root / "schedule.yaml")
    reference, killed = root / "reference", root / "killed"
    reference_process = start(schedule, corpus, reference, root / "reference.log")
    killed_process = start(schedule, corpus, killed, root / "killed-first.log")
    kill_when_logged(killed_process, str(killed / "iter2" / "train" / "train.log"))
    last = killed / "iter2" / "train" / "checkpoints" / "checkpoint_last.pt"
    assert updates_in(str(last)) == SAVE_EVERY, "the kill must land between two saves of iteration 2"
    before = {stage: stamp(str(killed), stage) for stage in ["data", *ITERATION_1, *BEFORE_TRAINING_2]}
    resumed_output = finish(start(schedule, corpus, killed, root / "killed-resumed.log"), root / "killed-resumed.log")
    finish(reference_process, root / "reference.log")
    return {"reference": str(reference), "killed": str(killed), "schedule": schedule, "root": root,
            "stamps_before": before, "resumed_output": resumed_output, "corpus": corpus}


def test_the_resumed_run_redoes_nothing_finished(runs):
    output = runs["resumed_output"]
    for stage, before in runs["stamps_before"].items():
        assert f"[{stage}] done before, skipped" in output
        assert stamp(runs["killed"], stage) == before, f"{stage} was rewritten"
    assert "[iter2.train] resuming" in output
    log = open(os.path.join(runs["killed"], "iter2", "train", "train.log")).read()
    assert re.search(rf"Loaded checkpoint \S+checkpoint_last\.pt \(epoch \d+ @ {SAVE_EVERY} updates\)", log)


def test_the_killed_and_resumed_run_ends_bit_identical(runs):
    for iteration in ("iter1", "iter2"):
        ours = load_checkpoint(os.path.join(runs["killed"], iteration, "train", "model.pt"))["model"]
        reference = load_checkpoint(os.path.join(runs["reference"], iteration, "train", "model.pt"))["model"]
        assert ours.keys() == reference.keys()
        different = [key for key in ours if not torch.equal(ours[key], reference[key])]
        assert not different, f"{iteration}: {len(different)} tensors differ, e.g. {different[:3]}"
    for split in ("train", "valid"):
        assert (open(os.path.join(runs["killed"], "iter2", "labels", f"{split}.km")).read() ==
                open(os.path.join(runs["reference"], "iter2", "labels", f"{split}.km")).read())


def test_summary_lists_every_iteration_with_its_checkpoint_and_measures(runs):
    summary = json.load(open(os.path.join(runs["reference"], "summary.json")))
    iterations = summary["iterations"]
    assert [entry["iteration"] for entry in iterations] == [1, 2]
    for entry, n_clusters in zip(iterations, (8, 10)):
        assert entry["checkpoint"] == os.path.join(runs["reference"], entry["name"], "train", "model.pt")
        assert updates_in(entry["checkpoint"]) == UPDATES and entry["valid"]["num_updates"] == UPDATES
        assert 0.0 <= entry["valid"]["correct_m_0"] <= 1.0
        quality = entry["cluster_quality"]["valid"]
        assert 0.0 < quality["pnmi"] < 1.0 and quality["clusters"] <= n_clusters
        assert [layer["name"] for layer in entry["layers"]] == ["cnn", "block0_in", "block1", "block2"]
        assert all(0.0 <= layer["input_cka"] <= 1.0 for layer in entry["layers"])
        assert all(0.0 <= layer["phone_acc"] <= 1.0 for layer in entry["layers"])  # the corpus has .phn labels
    assert summary["random"]["layers"] and summary["completed_updates"] == 2 * UPDATES
    for scores in summary["random"]["inputs"].values():  # the phone probe on log-mel and MFCC frames
        assert 0.0 <= scores["phone_acc"] <= 1.0
    for name in ("report.md", "report.csv", "report.png"):
        assert os.path.getsize(os.path.join(runs["reference"], name)) > 0
    report = open(os.path.join(runs["reference"], "report.md")).read()
    assert "## phone probe frame accuracy (`phone_acc`), layer x iteration" in report and "Chance level: " in report
    assert "Same probe on the inputs: log-mel (80-d) " in report
    assert "| iter2 | layer 1 | 10 | 6 | previous |" in open(os.path.join(runs["reference"], "report.md")).read()


def test_the_warm_start_carries_the_trunk_and_renews_the_head(runs):
    first = load_checkpoint(os.path.join(runs["reference"], "iter1", "train", "model.pt"))["model"]
    init = load_checkpoint(os.path.join(runs["reference"], "iter2", "train", "init.pt"))
    head = ("final_proj.", "label_embs_concat")
    assert first.keys() == init["model"].keys()
    for key, value in first.items():
        if not key.startswith(head):
            assert torch.equal(value, init["model"][key]), key
    assert first["label_embs_concat"].shape[0] == 8 + 4 and init["model"]["label_embs_concat"].shape[0] == 10 + 4
    assert init["cfg"]["model"]["label_rate"] == 50


@pytest.mark.parametrize("iteration", ["iter1", "iter2"])
def test_every_iteration_loads_in_fairseq_laser_and_s3prl(runs, iteration, tmp_path):
    from fairseq import checkpoint_utils
    from s3prl.upstream.hubert.hubconf import hubert_local

    checkpoint = str(tmp_path / "model.pt")  # s3prl writes its converted copy beside the file
    shutil.copy(os.path.join(runs["reference"], iteration, "train", "model.pt"), checkpoint)
    state = load_checkpoint(checkpoint)
    assert state["args"] is None and state["last_optimizer_state"] is None
    assert state["cfg"]["common"]["user_dir"] is None and state["cfg"]["model"]["_name"] == "hubert"
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([checkpoint])
        expert = hubert_local(ckpt=checkpoint, fairseq=True)
    assert cfg.model._name == "hubert" and len(task.dictionaries[0]) == 4 + (8 if iteration == "iter1" else 10)
    source = torch.randn(1, 24000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = build_upstream(checkpoint).eval().hidden_states(source)
        theirs = expert.eval()([source[0]])["hidden_states"]
        fairseq_top, _ = models[0].eval().extract_features(source, mask=False)
    assert len(ours) == len(theirs) == 3
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) <= 1e-5
    assert (ours[-1] - fairseq_top).abs().max().item() <= 1e-5


def test_changed_settings_are_refused_naming_the_stage(runs):
    changed = json.loads(json.dumps(SCHEDULE))
    changed["iterations"][1]["n_clusters"] = 12
    schedule = write_schedule(runs["root"] / "changed.yaml", changed)
    result = subprocess.run([sys.executable, DRIVER, "--schedule", schedule, "--data", runs["corpus"], "--out",
                             runs["reference"]], cwd=REPO, capture_output=True, text=True, env=dict(os.environ, **ONE_THREAD))
    assert result.returncode != 0
    assert "iter2.kmeans: its settings changed since it ran (n_clusters: 10 -> 12)" in result.stderr
    assert "--force-stage iter2.kmeans" in result.stderr
    assert stamp(runs["reference"], "iter2.kmeans")["settings"]["n_clusters"] == 10
    assert json.load(open(os.path.join(runs["reference"], "summary.json")))["schedule"] == "schedule"  # untouched


def test_feature_shards_dumped_by_separate_processes_are_not_redone(corpus, tmp_path):
    schedule = write_schedule(tmp_path / "schedule.yaml")
    out = tmp_path / "run"
    base = [sys.executable, DRIVER, "--schedule", schedule, "--data", corpus, "--out", str(out)]
    env = dict(os.environ, **ONE_THREAD)
    subprocess.run(base + ["--stop-after", "data"], cwd=REPO, env=env, check=True, capture_output=True)
    commands = [base + ["--iteration", "1", "--shard", str(rank)] for rank in (0, 1)]
    commands.append(base + ["--iteration", "2", "--shard", "0"])  # needs iteration 1's model: refused
    workers = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for command in commands]
    outputs = [worker.communicate(timeout=600)[0] for worker in workers]
    assert [worker.returncode for worker in workers[:2]] == [0, 0], outputs
    for rank, output in enumerate(outputs[:2]):
        assert f"train shard {rank + 1}/2" in output and f"train shard {2 - rank}/2" not in output
    assert workers[2].returncode != 0 and "stage iter1.train has not finished" in outputs[2]
    assert stamp(str(out), "iter1.features")["status"] == "running"
    final = subprocess.run(base + ["--stop-after", "iter1.features"], cwd=REPO, env=env, capture_output=True,
                           text=True, check=True).stdout
    assert "[iter1.features] resuming" in final and " shard " not in final
    assert stamp(str(out), "iter1.features")["status"] == "done"


def test_comparison_of_two_runs(runs, tmp_path):
    from laser_fairseq.pretraining.report import load_summary, write_comparison

    summaries = [load_summary(runs["reference"]), load_summary(runs["killed"])]
    files = write_comparison(str(tmp_path), summaries, "python scripts/compare_pretraining.py ...")
    text = open(files["md"]).read()
    assert "did not do the same number of updates" not in text
    pnmi = [f"{entry['cluster_quality']['valid']['pnmi']:.3f}" for entry in summaries[0]["iterations"]]
    assert f"| schedule (reference) | 2 | {2 * UPDATES} |" in text and ", ".join(pnmi) in text  # same seed twice
    assert "## Along training (mean ± std over seeds)" in text and "| schedule | 3, 3 | 12 | " in text
    assert "## Final model: input likeness (CKA with log-mel) (`input_cka`) per layer" in text
    rows = open(files["csv"]).read().splitlines()
    assert rows[0] == "schedule,model,layer_index,layer,measure,value"
    assert sum(",final,3,block2,input_cka," in row for row in rows) == 2
    curve_rows = open(files["curve_csv"]).read().splitlines()
    assert curve_rows[0] == "schedule,seed,iteration,updates,total_updates,layer,measure,value"
    assert len([row for row in curve_rows if ",best_phone_acc," in row]) == 2 * 4  # 2 runs x 4 points
    assert os.path.getsize(files["curve_png"]) > 0
    with pytest.raises(FileNotFoundError, match="no summary"):
        load_summary(str(tmp_path / "nothing"))


def same_layers(ours, theirs):
    """Equal layer measures up to float rounding: the driver ran with one thread, the test process may use
    more (torch's reductions then sum in another order, ~1e-9 apart)."""
    def close(x, y):
        return x == pytest.approx(y, rel=1e-6, abs=1e-9) if isinstance(x, float) and isinstance(y, float) else x == y

    return len(ours) == len(theirs) and all(
        a.keys() == b.keys() and all(close(a[k], b[k]) for k in a) for a, b in zip(ours, theirs))


def test_the_curve_analyses_the_checkpoints_kept_along_training(runs, tmp_path):
    from laser_fairseq.checkpoint_io import write_checkpoint
    from laser_fairseq.pretraining.layer_analysis import analyze_checkpoint
    from laser_fairseq.pretraining.schedule import load_schedule
    from laser_fairseq.pretraining.training import pretrained_checkpoint

    summary = json.load(open(os.path.join(runs["reference"], "summary.json")))
    points = summary["curve"]
    assert [(p["iteration"], p["updates"], p["total_updates"]) for p in points] == [
        ("iter1", 3, 3), ("iter1", 6, 6), ("iter2", 3, 9), ("iter2", 6, 12)]
    for point, entry in zip(points, [it for it in summary["iterations"] for _ in (0, 1)]):
        assert point["targets_pnmi"] == entry["cluster_quality"]["valid"]["pnmi"]
    assert points[1]["layers"] == summary["iterations"][0]["layers"]  # the last point is the final analysis
    # the point at 3 updates of iteration 2 = the analysis of fairseq's checkpoint_<epoch>_3.pt, done here
    save_dir = os.path.join(runs["reference"], "iter2", "train", "checkpoints")
    kept = [name for name in os.listdir(save_dir) if re.fullmatch(r"checkpoint_\d+_3\.pt", name)]
    assert len(kept) == 1 and updates_in(os.path.join(save_dir, kept[0])) == SAVE_EVERY
    model = str(tmp_path / "model.pt")
    write_checkpoint(pretrained_checkpoint(load_checkpoint(os.path.join(save_dir, kept[0]))), model)
    schedule = load_schedule(runs["schedule"])
    expected = analyze_checkpoint(model, os.path.join(runs["reference"], "data"), schedule.analysis, "cpu", "x",
                                  str(tmp_path))
    assert same_layers(points[2]["layers"], expected["layers"]) and not same_layers(points[2]["layers"], points[3]["layers"])
    assert not os.path.exists(os.path.join(runs["reference"], "iter2", "curve", "u3", "model.pt"))
    # the resumed run's curve is the uninterrupted run's, and the reports carry it
    assert open(os.path.join(runs["killed"], "curve.csv")).read() == open(os.path.join(runs["reference"], "curve.csv")).read()
    rows = open(os.path.join(runs["reference"], "curve.csv")).read().splitlines()
    assert rows[0] == "iteration,updates,total_updates,layer_index,layer,measure,value"
    assert f"iter2,3,9,3,block2,phone_acc,{points[2]['layers'][3]['phone_acc']}" in rows
    assert os.path.getsize(os.path.join(runs["reference"], "curve.png")) > 0
    report = open(os.path.join(runs["reference"], "report.md")).read()
    assert f"## Along training (every {SAVE_EVERY} updates)" in report and "| iter2 | 3 | 9 | " in report


def test_a_curve_stage_killed_between_two_points_resumes_at_the_missing_one(runs, tmp_path):
    from laser_fairseq.pretraining.driver import Driver
    from laser_fairseq.pretraining.schedule import load_schedule

    run = str(tmp_path / "run")
    shutil.copytree(runs["reference"], run)
    curve_dir = os.path.join(run, "iter2", "curve")
    before = json.load(open(os.path.join(curve_dir, "u3", "analysis.json")))
    shutil.rmtree(os.path.join(curve_dir, "u3"))
    os.makedirs(os.path.join(curve_dir, "u3.tmp-12345"))  # a point half written when the run was killed
    stamp_path = os.path.join(curve_dir, "stamp.json")
    running = dict(json.load(open(stamp_path)), status="running")
    json.dump(running, open(stamp_path, "w"))
    lines = []  # the driver in this process (the command line's resume: test_the_resumed_run_redoes_nothing_finished)
    Driver(load_schedule(runs["schedule"]), runs["corpus"], run, echo=lines.append).run()
    output = "\n".join(lines)
    assert "[iter2.curve] resuming" in output
    assert "[iter2.curve] analysing the checkpoint at 3 updates (1/1)" in output
    assert "[iter1.curve] done before, skipped" in output and "[iter2.train] done before, skipped" in output
    after = json.load(open(os.path.join(curve_dir, "u3", "analysis.json")))
    assert same_layers(after["layers"], before["layers"])  # the run was copied: only its paths differ
    assert re.fullmatch(re.escape(os.path.join(run, "iter2", "train", "checkpoints")) + r"/checkpoint_\d+_3\.pt",
                        after["checkpoint"])
    assert sorted(os.listdir(curve_dir)) == ["stamp.json", "u3"]
    assert json.load(open(stamp_path))["run_id"] == running["run_id"]


def test_seed_flag_replaces_the_schedules_seed_and_is_recorded(corpus, tmp_path):
    from laser_fairseq.cli.pretrain_hubert import main

    schedule = write_schedule(tmp_path / "schedule.yaml")
    out = tmp_path / "run"
    main(["--schedule", schedule, "--data", corpus, "--out", str(out), "--seed", "5", "--stop-after", "iter1.kmeans"])
    assert stamp(str(out), "iter1.kmeans")["settings"]["seed"] == 5  # the schedule says 3
    assert open(out / "schedule.yaml").read().endswith("\n# run with --seed 5\n")
    assert json.load(open(out / "summary.json"))["seed"] == 5
