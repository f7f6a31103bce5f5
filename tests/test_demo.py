"""laser_fairseq.demo and its front door laser_fairseq.cli.run_demo (`make demo`): the demo corpus is made with
the demo's settings and reused only when made with them, bad folders and upstreams are refused before anything is
written, and the closing table reads analyze_layers' summary. The training and analysis it runs are tested
elsewhere (tests/laser_runs.py runs demo_train_command; `make demo` runs the whole)."""

import json
import math
import os

import pytest

from laser_fairseq import demo
from laser_fairseq.cli import run_demo

TINY_SETTINGS = {"sentences": 3, "voices": 2, "seed": 2}


def write_corpus_record(folder, settings):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "corpus.json"), "w") as handle:
        json.dump({"settings": settings}, handle)


def test_a_demo_corpus_made_with_other_settings_is_refused_not_reused(tmp_path, monkeypatch):
    corpus = str(tmp_path / "corpus")
    monkeypatch.setattr(demo, "DEMO_CORPUS", corpus)
    write_corpus_record(corpus, dict(demo.CORPUS_SETTINGS, sentences=61))
    with pytest.raises(demo.DemoError, match=r"corpus\.json was made with other settings"):
        demo.ensure_corpus(corpus)
    write_corpus_record(corpus, dict(demo.CORPUS_SETTINGS, workers=1))
    demo.ensure_corpus(corpus)  # same settings: reused, nothing made
    assert os.listdir(corpus) == ["corpus.json"]


def test_a_missing_corpus_is_made_with_the_demo_settings_then_reused(tmp_path, monkeypatch, capsys):
    corpus = str(tmp_path / "corpus")
    monkeypatch.setattr(demo, "DEMO_CORPUS", corpus)
    monkeypatch.setattr(demo, "CORPUS_SETTINGS", TINY_SETTINGS)
    demo.ensure_corpus(corpus, workers=1)
    with open(os.path.join(corpus, "corpus.json")) as handle:
        made = json.load(handle)
    assert {key: made["settings"][key] for key in TINY_SETTINGS} == TINY_SETTINGS
    assert sum(made["counts"][split]["utterances"] for split in ("train", "valid", "test")) == 6
    assert "wrote 6 utterances" in capsys.readouterr().out
    modified = os.path.getmtime(os.path.join(corpus, "train.tsv"))
    demo.ensure_corpus(corpus, workers=1)
    assert "(made before, reused)" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(corpus, "train.tsv")) == modified


def test_a_non_corpus_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(demo.DemoError, match="neither empty nor a corpus"):
        demo.ensure_corpus(str(folder))
    assert (folder / "mine.txt").read_text() == "keep me"


def test_the_front_door_refuses_an_existing_run_dir_and_a_missing_upstream_before_writing(tmp_path):
    existing = tmp_path / "run"
    existing.mkdir()
    with pytest.raises(SystemExit, match=r"^error: .*run exists; choose another --run-dir$"):
        run_demo.main(["--run-dir", str(existing)])
    corpus, new_run = tmp_path / "corpus", tmp_path / "new-run"
    with pytest.raises(SystemExit, match=r"^error: --upstream .*missing\.pt does not exist"):
        run_demo.main(["--upstream", str(tmp_path / "missing.pt"), "--corpus", str(corpus), "--run-dir", str(new_run)])
    assert not corpus.exists() and not new_run.exists()


def test_fairseq_log_values_are_read_by_tag_and_key():
    log = ("[2026-12-06 20:00:00,000][train_inner][INFO] - {\"epoch\": 1, \"loss\": \"1.25\", \"num_updates\": \"10\"}\n"
           "epoch 001 | valid on 'valid' subset | loss 0.875 | num_updates 20\n"
           "[2026-12-06 20:00:01,000][valid][INFO] - epoch 001 | valid on 'valid' subset | loss 0.75 | num_updates 20\n"
           "[x][train_inner][INFO] - loss=nan, num_updates=30\n")
    assert demo.logged_values(log, "valid") == [(20, 0.75)]
    (update, loss), = demo.logged_values(log, "train_inner")  # the JSON line's quoted values are not read
    assert update == 30 and math.isnan(loss)


def test_the_closing_table_shows_the_two_trained_blocks_before_and_after(tmp_path, capsys):
    def layers(values):
        return [{"name": f"block{i}", "phone_acc": v, "phone_per": 2.0, "retrieval_map": v, "invariance": v,
                 "voice_probe": v} for i, v in enumerate(values)]

    summary = {"main": {"layers": layers([0.1, 0.2, 0.3]), "phone_acc_chance": 0.2},
               "compare": {"layers": layers([0.1, 0.25, 0.45])}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    demo.print_changes(str(path))
    out = capsys.readouterr().out
    assert "block1 before" in out and "block2 before" in out and "block0 before" not in out
    assert "phone probe accuracy (up)" in out and "0.200   0.250           0.300   0.450" in out
    assert "chance level (majority phone): 0.200" in out
