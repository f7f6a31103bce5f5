"""Stage stamps: finished stages are skipped, interrupted ones resumed, stale ones redone, changed settings
refused unless forced, damaged outputs noticed."""

import json
import os

import pytest

from laser_fairseq.pretraining.stamps import RESUME, RUN, SKIP, Stage, StageBook, StageError, read_stamp


def make_stage(tmp_path, settings=None, inputs=None, name="iter1.kmeans"):
    return Stage(name, str(tmp_path / name), settings or {"n_clusters": 10, "kmeans": {"n_init": 3}},
                 inputs or {"iter1.features": "a1"})


def run_to_completion(book, stage, content="centroids"):
    assert book.begin(stage) == RUN
    with open(os.path.join(stage.directory, "out.txt"), "w") as handle:
        handle.write(content)
    return book.finish(stage, ["out.txt"], {"inertia": 1.5})


def test_a_finished_stage_is_skipped_with_its_run_id_kept(tmp_path):
    stamp = run_to_completion(StageBook(), make_stage(tmp_path))
    assert stamp["status"] == "done" and stamp["outputs"] == {"out.txt": 9} and stamp["record"] == {"inertia": 1.5}
    assert StageBook().begin(make_stage(tmp_path)) == SKIP
    assert read_stamp(make_stage(tmp_path).directory)["run_id"] == stamp["run_id"]


def test_an_interrupted_stage_resumes_and_keeps_its_files(tmp_path):
    stage = make_stage(tmp_path)
    assert StageBook().begin(stage) == RUN
    started = read_stamp(stage.directory)
    (tmp_path / stage.name / "partial.npy").write_text("shard 0")
    book = StageBook()
    assert book.begin(make_stage(tmp_path)) == RESUME
    assert (tmp_path / stage.name / "partial.npy").exists()
    assert book.finish(make_stage(tmp_path), ["partial.npy"])["run_id"] == started["run_id"]


def test_changed_settings_are_refused_naming_the_change_and_the_way_out(tmp_path):
    run_to_completion(StageBook(), make_stage(tmp_path))
    changed = make_stage(tmp_path, settings={"n_clusters": 20, "kmeans": {"n_init": 3}})
    with pytest.raises(StageError) as caught:
        StageBook().begin(changed)
    assert "n_clusters: 10 -> 20" in str(caught.value) and "--force-stage iter1.kmeans" in str(caught.value)
    nested = make_stage(tmp_path, settings={"n_clusters": 10, "kmeans": {"n_init": 4}})
    with pytest.raises(StageError, match=r"kmeans\.n_init: 3 -> 4"):
        StageBook().begin(nested)


def test_forcing_redoes_the_stage_from_nothing_with_a_new_run_id(tmp_path):
    old = run_to_completion(StageBook(), make_stage(tmp_path))
    changed = make_stage(tmp_path, settings={"n_clusters": 20})
    book = StageBook(force=["iter1.kmeans"])
    assert book.begin(changed) == RUN
    assert os.listdir(changed.directory) == ["stamp.json"]
    new = book.finish(changed, [])
    assert new["run_id"] != old["run_id"] and new["settings"] == {"n_clusters": 20}
    assert book.force == set()  # forced once per invocation


def test_a_stage_whose_inputs_were_redone_is_redone_without_asking(tmp_path):
    old = run_to_completion(StageBook(), make_stage(tmp_path))
    stale = make_stage(tmp_path, inputs={"iter1.features": "b2"})
    assert StageBook().begin(stale) == RUN
    assert not os.path.exists(os.path.join(stale.directory, "out.txt"))
    assert read_stamp(stale.directory)["run_id"] != old["run_id"]


def test_damaged_outputs_and_foreign_files_are_refused(tmp_path):
    stage = make_stage(tmp_path)
    run_to_completion(StageBook(), stage)
    with open(os.path.join(stage.directory, "out.txt"), "a") as handle:
        handle.write("!")
    with pytest.raises(StageError, match="out.txt has 10 bytes, 9 when written"):
        StageBook().begin(make_stage(tmp_path))
    os.remove(os.path.join(stage.directory, "out.txt"))
    with pytest.raises(StageError, match="out.txt is missing"):
        StageBook().begin(make_stage(tmp_path))
    foreign = make_stage(tmp_path, name="iter2.labels")
    os.makedirs(foreign.directory)
    (tmp_path / "iter2.labels" / "train.km").write_text("1 2 3\n")
    with pytest.raises(StageError, match="holds files but no stamp"):
        StageBook().begin(foreign)


def test_a_second_process_starting_the_same_stage_joins_it(tmp_path):
    """Shard workers started together: the stamp is created once, the others resume without clearing."""
    first, second = StageBook(), StageBook()
    assert first.begin(make_stage(tmp_path)) == RUN
    (tmp_path / "iter1.kmeans" / "train_0_2.len").write_text("5\n")
    assert second.begin(make_stage(tmp_path)) == RESUME
    assert (tmp_path / "iter1.kmeans" / "train_0_2.len").exists()


def test_settings_compare_as_they_read_back_from_json(tmp_path):
    stage = make_stage(tmp_path, settings={"splits": ("train", "valid"), "rate": 50})
    run_to_completion(StageBook(), stage)
    assert json.load(open(stage.stamp_path))["settings"] == {"splits": ["train", "valid"], "rate": 50}
    assert StageBook().begin(make_stage(tmp_path, settings={"splits": ("train", "valid"), "rate": 50})) == SKIP
