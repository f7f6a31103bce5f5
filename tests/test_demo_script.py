"""scripts/run_demo.py's own logic (the training and analysis it runs are tested elsewhere): the demo corpus
is reused only when made with the demo's settings, and the closing table reads analyze_layers' summary."""

import json
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "scripts"))
import run_demo  # noqa: E402


def write_corpus_record(folder, settings):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "corpus.json"), "w") as handle:
        json.dump({"settings": settings}, handle)


def test_a_demo_corpus_made_with_other_settings_is_refused_not_reused(tmp_path, monkeypatch):
    corpus = str(tmp_path / "corpus")
    monkeypatch.setattr(run_demo, "DEMO_CORPUS", corpus)
    write_corpus_record(corpus, dict(run_demo.CORPUS_SETTINGS, sentences=61))
    with pytest.raises(SystemExit, match=r"corpus\.json was made with other settings"):
        run_demo.ensure_corpus(corpus)
    write_corpus_record(corpus, dict(run_demo.CORPUS_SETTINGS, workers=1))
    run_demo.ensure_corpus(corpus)  # same settings: reused, nothing run


def test_a_non_corpus_folder_is_never_overwritten(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "mine.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="neither empty nor a corpus"):
        run_demo.ensure_corpus(str(folder))
    assert (folder / "mine.txt").read_text() == "keep me"


def test_the_closing_table_shows_the_two_trained_blocks_before_and_after(tmp_path, capsys):
    def layers(values):
        return [{"name": f"block{i}", "phone_acc": v, "phone_per": 2.0, "retrieval_map": v, "invariance": v,
                 "voice_probe": v} for i, v in enumerate(values)]

    summary = {"main": {"layers": layers([0.1, 0.2, 0.3]), "phone_acc_chance": 0.2},
               "compare": {"layers": layers([0.1, 0.25, 0.45])}}
    path = tmp_path / "summary.json"
    path.write_text(json.dumps(summary))
    run_demo.print_changes(str(path))
    out = capsys.readouterr().out
    assert "block1 before" in out and "block2 before" in out and "block0 before" not in out
    assert "phone probe accuracy (up)" in out and "0.200   0.250           0.300   0.450" in out
    assert "chance level (majority phone): 0.200" in out
