"""The LASER effect study (laser_fairseq.evaluation.study, laser-evaluate-laser): variants, resumable runs, the
selection split, the table, the yardstick columns (SUPERB-PR, ABX); one real end-to-end run."""

import collections
import json
import os
import re

import numpy as np
import pytest

from laser_fairseq.analysis import features
from laser_fairseq.analysis.collapse import effective_rank, mean_pairwise_cosine
from laser_fairseq.analysis.utterances import load_utterances
from laser_fairseq.data.audio import read_audio
from laser_fairseq.data.synthetic_corpus import CorpusSettings, build_corpus
from laser_fairseq.checkout import REPO
from laser_fairseq.cli import evaluate_laser
from laser_fairseq.evaluation import records as rows
from laser_fairseq.evaluation import table
from laser_fairseq.evaluation.measure import EvalSettings, measure
from laser_fairseq.evaluation.runs import Run, RunError, TrainingSettings, finished, training_command
from laser_fairseq.evaluation.study import STAMP, results_stem
from laser_fairseq.evaluation.variants import VARIANTS, parse_variants
from laser_fairseq.evaluation.yardsticks import YardstickSettings
from laser_fairseq.models.trained_upstream import open_upstream
from laser_fairseq.tiny_upstream import make_tiny_hubert, save_checkpoint



def settings(**changes):
    values = dict(upstream="/m/up.pt", data="/d", lr=3e-4, max_update=360, config_dir="/c", config_name="tiny_hubert")
    values.update(changes)
    return TrainingSettings(**values)


def overrides(command):
    return {item.split("=", 1)[0]: item.split("=", 1)[1] for item in command if "=" in item}


def test_each_variant_changes_only_its_criterion_weight():
    commands = {name: overrides(training_command(Run(VARIANTS[name], 2, settings()), "/out"))
                for name in ("laser", "sdtw_only", "idm_only")}
    assert "criterion.alpha" not in commands["laser"] and "criterion.sdtw_weight" not in commands["laser"]
    assert commands["sdtw_only"]["criterion.alpha"] == "0.0"
    assert commands["idm_only"]["criterion.sdtw_weight"] == "0.0"
    shared = {key: value for key, value in commands["laser"].items() if "save_dir" not in key and "logdir" not in key
              and "hydra.run.dir" not in key}
    for name in ("sdtw_only", "idm_only"):
        assert {k: v for k, v in commands[name].items() if k in shared} == shared
    laser = commands["laser"]
    assert laser["common.seed"] == "2" and laser["optimization.lr"] == "[0.0003]"
    assert laser["optimization.max_update"] == laser["lr_scheduler.total_num_update"] == "360"
    assert laser["lr_scheduler.warmup_updates"] == "100"  # the paper's 1000 of 3600
    assert laser["checkpoint.save_dir"] == "/out/runs/laser/lr0.0003-u360/seed2/checkpoints"


def test_unknown_or_repeated_variants_are_refused():
    with pytest.raises(ValueError, match="unknown variant"):
        parse_variants(["laser", "lasr"])
    with pytest.raises(ValueError, match="twice"):
        parse_variants(["laser", "laser"])


def test_a_finished_run_is_reused_only_with_the_same_command(tmp_path):
    run = Run(VARIANTS["laser"], 1, settings())
    out = str(tmp_path)
    assert finished(run, out) is None
    os.makedirs(run.folder(out))
    with open(os.path.join(run.folder(out), "done.json"), "w") as handle:
        json.dump({"command": training_command(run, out), "checkpoint": "x"}, handle)
    assert finished(run, out)["checkpoint"] == "x"
    changed = Run(VARIANTS["laser"], 1, settings(upstream="/m/other.pt"))
    with pytest.raises(RunError, match="another command"):
        finished(changed, out)


def measures(values_by_layer, top):
    return {"layers": {name: {"phone_acc": acc, "phone_per": 1 - acc, "retrieval_map": 0.5}
                       for name, acc in values_by_layer.items()},
            "top_layer": top, "chance": {"phone_acc_chance": 0.2}}


def test_the_best_layer_is_chosen_on_the_selection_split_and_reported_on_the_other():
    selection = measures({"block1": 0.9, "block2": 0.5, "block3": 0.6}, "block3")
    reported = measures({"block1": 0.4, "block2": 0.8, "block3": 0.7}, "block3")
    entry = rows.record("laser", 1, 3e-4, 360, reported, selection)
    assert entry["best_layer_on_select"] == "block1"
    assert entry["phone_acc_best"] == 0.4  # block1's value on the reported split, not the reported maximum
    assert entry["phone_acc_top"] == 0.7 and entry["phone_per_top"] == pytest.approx(0.3)
    assert entry["phone_acc_chance"] == 0.2


def test_table_aggregates_mean_and_sample_std_per_variant():
    records = [{"variant": "laser", "seed": s, "phone_acc_top": v} for s, v in ((1, 0.5), (2, 0.7), (3, None))]
    records.append({"variant": "upstream", "seed": 0, "phone_acc_top": 0.4})
    summary = table.summarise(records, [table.Column("phone_acc_top", "acc", "higher")])
    assert summary["laser"]["phone_acc_top"].mean == pytest.approx(0.6)
    assert summary["laser"]["phone_acc_top"].std == pytest.approx(0.1414213562, rel=1e-9)
    assert summary["laser"]["phone_acc_top"].n == 2
    assert summary["upstream"]["phone_acc_top"].std is None
    markdown = table.markdown_table(records, [table.Column("phone_acc_top", "acc", "higher")])
    assert "| laser | 3 | 0.600 ± 0.141 |" in markdown and "| upstream | 1 | 0.400 |" in markdown


def test_yardstick_table_gives_per_relative_change_and_abx_per_variant():
    abx = dict(abx_within_top=9.04, abx_across_top=9.26, abx_within_best=9.4, abx_across_best=11.75)
    records = [{"variant": "laser", "seed": 1, "superb_per": 0.49, "superb_per_rel": 0.035, **abx},
               {"variant": "laser", "seed": 2, "superb_per": 0.45, "superb_per_rel": -0.071, **abx},
               {"variant": "upstream", "seed": 1, "superb_per": 0.474, "superb_per_rel": 0.0, **abx}]
    lines = table.yardstick_table(records).splitlines()
    assert len(lines) == 2 + 2 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 10
    assert lines[2] == ("| laser | 2 | 0.470 ± 0.028 | -1.8 % ± 7.5 | 0.490 (+3.5 %), 0.450 (-7.1 %) | 9.0 ± 0.0 "
                        "| 9.3 ± 0.0 | 9.4 ± 0.0 | 11.8 ± 0.0 |")
    assert lines[3] == "| upstream | 1 | 0.474 | reference | 0.474 | 9.0 | 9.3 | 9.4 | 11.8 |"


def test_yardstick_table_reads_na_for_a_variant_without_superb_pr():
    """--superb-pr-variants leaves the other variants' SUPERB-PR columns empty: n/a, their ABX still shown."""
    abx = dict(abx_within_top=9.04, abx_across_top=9.26, abx_within_best=9.4, abx_across_best=11.75)
    records = [{"variant": "sdtw_only", "seed": 1, "superb_per_rel": None, **abx},
               {"variant": "sdtw_only", "seed": 2, "superb_per": None, "superb_per_rel": None, **abx},
               {"variant": "upstream", "seed": 1, "superb_per": 0.474, "superb_per_rel": 0.0, **abx}]
    lines = table.yardstick_table(records).splitlines()
    assert lines[2] == "| sdtw_only | 2 | n/a | n/a | n/a | 9.0 ± 0.0 | 9.3 ± 0.0 | 9.4 ± 0.0 | 11.8 ± 0.0 |"
    assert lines[3] == "| upstream | 1 | 0.474 | reference | 0.474 | 9.0 | 9.3 | 9.4 | 11.8 |"


def test_superb_pr_is_asked_of_the_listed_variants_only():
    assert YardstickSettings().superb_pr_of("idm_only")  # default: every variant
    listed = YardstickSettings(superb_pr_variants=("laser", "upstream"))
    assert listed.superb_pr_of("laser") and listed.superb_pr_of("upstream") and not listed.superb_pr_of("sdtw_only")
    assert not YardstickSettings(superb_pr=False, superb_pr_variants=("laser",)).superb_pr_of("laser")


def test_superb_pr_variants_must_be_among_the_variants_run(capsys):
    with pytest.raises(SystemExit):
        evaluate_laser.parse_args(["--upstream", "u.pt", "--data", "d", "--out", "o", "--variants", "laser",
                                   "upstream", "--superb-pr-variants", "laser", "idm_only"])
    assert "--superb-pr-variants idm_only: not among the variants run" in capsys.readouterr().err
    args = evaluate_laser.parse_args(["--upstream", "u.pt", "--data", "d", "--out", "o",
                                      "--superb-pr-variants", "laser", "upstream"])
    assert args.superb_pr_variants == ["laser", "upstream"] and args.variants == list(VARIANTS)


@pytest.mark.parametrize("folder", ["", "cnn64"])
@pytest.mark.parametrize("stem", ["results", "results_test_unseen_voices"])
def test_the_effect_readme_shows_the_committed_yardstick_tables(folder, stem):
    """examples/laser_effect/README.md's SUPERB-PR / ABX tables are the rendering of the committed results (the
    study on the demo's upstream, and the earlier one on the 64-channel model in cnn64/)."""
    effect = os.path.join(REPO, "examples", "laser_effect")
    with open(os.path.join(effect, folder, f"{stem}.json"), encoding="utf-8") as handle:
        records = json.load(handle)["records"]
    assert collections.Counter(r["variant"] for r in records) == {name: 3 for name in VARIANTS}  # as README says
    with open(os.path.join(effect, "README.md"), encoding="utf-8") as handle:
        assert table.yardstick_table(records) in handle.read()


ROOT_TABLE_ROWS = {"upstream (no training)": "upstream", "**LASER**": "laser", "soft-DTW only (α = 0)": "sdtw_only",
                   "Contrastive-IDM only": "idm_only"}
ROOT_TABLE_COLUMNS = ("phone_acc_top", "phone_per_top", "retrieval_map_top", "mean_cosine_top")


def test_the_root_readme_effect_table_is_the_committed_unseen_voice_results():
    """README.md's effect table (after ``<!-- effect-table -->``): each cell's mean (and ± std) is the committed
    held-out-voice result rounded to the digits the cell shows, for every variant of the study."""
    with open(os.path.join(REPO, "examples", "laser_effect", "results_test_unseen_voices.json")) as handle:
        summary = table.summarise(json.load(handle)["records"])
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        after = handle.read().split("<!-- effect-table -->", 1)[1]
    variants = []
    for line in after.split("\n\n")[1].splitlines()[2:]:  # the table's rows, below its header and rule
        label, *cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        variants.append(ROOT_TABLE_ROWS[label])
        for key, cell in zip(ROOT_TABLE_COLUMNS, cells, strict=True):
            shown = re.findall(r"\d+\.\d+", cell)
            digits = len(shown[0].split(".")[1])
            value = summary[variants[-1]][key]
            assert f"{value.mean:.{digits}f}" == shown[0], (label, key)
            if len(shown) > 1:
                assert f"{value.std:.{digits}f}" == shown[1], (label, key)
    assert sorted(variants) == sorted(summary)


@pytest.fixture(scope="module")
def corpus_and_upstream(tmp_path_factory):
    folder = tmp_path_factory.mktemp("effect")
    corpus = str(folder / "corpus")
    # 6 test sentences of seed 3: triphone contexts enough for fastabx to have within-voice ABX cells (the
    # default seed's sentences have none at this size: fastabx raises EmptyTaskError)
    build_corpus(corpus, CorpusSettings(sentences=14, voices=3, valid_sentences=2, test_sentences=6, seed=3),
                 workers=1, log=lambda message: None)
    upstream = str(folder / "tiny_hubert.pt")
    save_checkpoint(make_tiny_hubert(), upstream)
    return corpus, upstream


def test_collapse_indicators_are_measured_on_the_analysis_encodings(corpus_and_upstream, monkeypatch):
    """The top layer's mean cosine and effective rank equal those of its frames computed on their own, and
    the upstream runs twice per utterance (original, perturbed), not a third time for them."""
    corpus, upstream = corpus_and_upstream
    calls = []
    real = features.layer_frames
    monkeypatch.setattr(features, "layer_frames", lambda *args: calls.append(1) or real(*args))
    settings = EvalSettings(max_utterances=6, probe_train_utterances=4)
    result = measure(upstream, os.path.join(corpus, "valid.tsv"), settings)
    assert len(calls) == 2 * 6
    monkeypatch.undo()
    model = open_upstream(upstream).upstream.eval()
    utterances = load_utterances(os.path.join(corpus, "valid.tsv"), max_utterances=6).utterances
    top = np.concatenate([real(model, read_audio(u.path, 16_000), "cpu")[-1] for u in utterances])
    values = result["layers"][result["top_layer"]]
    assert values["mean_cosine"] == mean_pairwise_cosine(top) and values["effective_rank"] == effective_rank(top)
    assert all("mean_cosine" not in v for name, v in result["layers"].items() if name != result["top_layer"])


def run_main(capsys, *arguments) -> str:
    evaluate_laser.main(list(arguments))
    return capsys.readouterr().out


def read_records(path):
    with open(path) as handle:
        return {(r["variant"], r["seed"]): r for r in json.load(handle)["records"]}


def test_end_to_end_trains_measures_tabulates_and_resumes_adding_the_yardsticks(
        corpus_and_upstream, tmp_path, monkeypatch, capsys):
    corpus, upstream = corpus_and_upstream
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "effect")
    # a relative --out (fairseq-hydra-train runs in its own folder: the study must hand it absolute paths)
    arguments = ["--upstream", upstream, "--data", corpus, "--out", "effect", "--variants", "idm_only", "upstream",
                 "--seeds", "1", "--max-update", "3", "--probe-train-utterances", "12",
                 "--override", "checkpoint.save_interval_updates=3"]
    first = run_main(capsys, *arguments, "--no-superb-pr", "--no-abx")
    assert "training (3 updates)" in first
    records = read_records(os.path.join(out, "results.json"))
    assert set(records) == {("idm_only", 1), ("upstream", 0)}
    for record in records.values():
        assert 0.0 < record["phone_acc_top"] <= 1.0 and record["retrieval_map_top"] > 0
        assert record["top_layer"] == "block4" and record["mean_cosine_top"] is not None
        assert "superb_per" not in record and "abx_within_top" not in record
    # the LASER run changed the top layer, the upstream row is the unchanged model
    assert records[("idm_only", 1)]["mean_cosine_top"] != records[("upstream", 0)]["mean_cosine_top"]
    for name in ("results.md", "results.csv", "results.png", "commands.sh", STAMP):
        assert os.path.getsize(os.path.join(out, name)) > 0
    with open(os.path.join(out, "commands.sh")) as handle:
        commands = handle.read()
    assert commands.count("fairseq-hydra-train") == 1 and "criterion.sdtw_weight=0.0" in commands
    checkpoint = os.path.join(out, "runs", "idm_only", "lr0.0003-u3", "seed1", "checkpoints", "checkpoint_last.pt")
    trained_at = os.stat(checkpoint).st_mtime_ns

    # the finished --out again, now with the yardsticks: nothing is trained, the new columns are measured
    second = run_main(capsys, *arguments, "--superb-pr-steps", "2")
    assert "finished earlier" in second and "training (" not in second
    with open(os.path.join(out, "commands.sh")) as handle:
        assert handle.read() == commands
    assert os.stat(checkpoint).st_mtime_ns == trained_at
    first_records, records = records, read_records(os.path.join(out, "results.json"))
    assert set(records) == {("idm_only", 1), ("upstream", 1)}  # the upstream: once per probe seed
    laser, up = records[("idm_only", 1)], records[("upstream", 1)]
    for record in (laser, up):
        assert 0.0 < record["superb_per"] < 5.0
        for key in ("abx_within_top", "abx_across_top", "abx_within_best", "abx_across_best"):
            assert 0.0 <= record[key] <= 100.0
    assert laser["superb_per_rel"] == (laser["superb_per"] - up["superb_per"]) / up["superb_per"]
    assert up["superb_per_rel"] == 0.0
    # the probe of each model really ran s3prl's recipe with its seed, on its own model
    result = json.load(open(os.path.join(out, "measures", "idm_only", "lr0.0003-u3", "seed1", "superb_pr", "seed1",
                                         "result.json")))
    assert result["steps"] == 2 and result["seed"] == 1 and result["upstream"] == checkpoint
    assert result["test"]["corpus_test"] == laser["superb_per"]
    # the upstream row's measures are the upstream's (the same probe-free numbers as the first table)
    assert up["phone_acc_top"] == first_records[("upstream", 0)]["phone_acc_top"]
    assert laser["phone_acc_top"] == first_records[("idm_only", 1)]["phone_acc_top"]
    with open(os.path.join(out, "results.md")) as handle:
        markdown = handle.read()
    assert "SUPERB-PR PER rel. to upstream" in markdown and "ABX across % (top)" in markdown

    # --measure-only: a second seed that never trained is left out and named, nothing is trained
    third = run_main(capsys, *arguments, "--seeds", "2", "--measure-only", "--no-superb-pr")
    assert "training (" not in third and "idm_only/lr0.0003-u3/seed2] not trained: left out" in third
    assert not os.path.exists(os.path.join(out, "runs", "idm_only", "lr0.0003-u3", "seed2"))
    with open(os.path.join(out, "results.json")) as handle:
        table_file = json.load(handle)
    assert table_file["not_trained"] == ["idm_only/lr0.0003-u3/seed2"]
    assert {(r["variant"], r["seed"]) for r in table_file["records"]} == {("idm_only", 1), ("upstream", 0)}

    # --superb-pr-variants upstream: the upstream keeps its (cached) probe, idm_only reads n/a, nothing is probed
    fourth = run_main(capsys, *arguments, "--measure-only", "--no-abx", "--superb-pr-variants", "upstream",
                      "--superb-pr-steps", "2")
    assert "[upstream seed 1] SUPERB-PR" in fourth and "[idm_only seed 1] SUPERB-PR" not in fourth
    records = read_records(os.path.join(out, "results.json"))
    assert records[("upstream", 1)]["superb_per"] == up["superb_per"]
    assert records[("idm_only", 1)].get("superb_per") is None and records[("idm_only", 1)]["superb_per_rel"] is None
    with open(os.path.join(out, "results.md")) as handle:
        assert "probed variants (--superb-pr-variants): upstream, the others n/a" in handle.read()


def test_a_finished_out_of_another_upstream_is_refused_and_left_as_it_is(corpus_and_upstream, tmp_path):
    corpus, upstream = corpus_and_upstream
    out = tmp_path / "effect"
    out.mkdir()
    (out / STAMP).write_text(json.dumps({"upstream": "/elsewhere/other.pt", "upstream_sha256": "0" * 64,
                                         "data": corpus}))
    (out / "results.md").write_text("the other study's table")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(SystemExit, match=f"{STAMP}.*another upstream.*new --out"):
        evaluate_laser.main(["--upstream", upstream, "--data", corpus, "--out", str(out), "--seeds", "1",
                             "--variants", "upstream"])
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


def test_relative_per_pairs_each_seed_with_the_upstreams_probe_of_the_same_seed():
    entries = [{"variant": "upstream", "seed": 1, "superb_per": 0.50}, {"variant": "upstream", "seed": 2,
                                                                         "superb_per": 0.40},
               {"variant": "laser", "seed": 1, "superb_per": 0.45}, {"variant": "laser", "seed": 2, "superb_per": 0.42},
               {"variant": "laser", "seed": 3, "superb_per": 0.30}, {"variant": "idm_only", "seed": 1}]
    rows.add_relative_per(entries)
    relative = {(e["variant"], e["seed"]): e["superb_per_rel"] for e in entries}
    assert relative[("laser", 1)] == pytest.approx(-0.10)  # (0.45 - 0.50) / 0.50
    assert relative[("laser", 2)] == pytest.approx(+0.05)  # (0.42 - 0.40) / 0.40, not against seed 1's 0.50
    assert relative[("laser", 3)] is None and relative[("idm_only", 1)] is None  # no pair: no number
    assert relative[("upstream", 1)] == 0.0
    summary = table.summarise(entries, [table.Column("superb_per_rel", "rel", "lower")])["laser"]["superb_per_rel"]
    assert summary.mean == pytest.approx(-0.025) and summary.n == 2


def test_abx_columns_read_the_top_and_the_best_layer():
    entry = {"top_layer": "block4", "best_layer_on_select": "block0_in"}
    rows.add_abx(entry, {"block4": {"within": 10.0, "across": 20.0}, "block0_in": {"within": 5.0, "across": 7.5}})
    assert (entry["abx_within_top"], entry["abx_across_top"]) == (10.0, 20.0)
    assert (entry["abx_within_best"], entry["abx_across_best"]) == (5.0, 7.5)


def test_a_table_on_another_split_does_not_replace_the_test_table():
    assert results_stem("test") == "results"
    assert results_stem("test_unseen_voices") == "results_test_unseen_voices"
