"""The model card --format hf writes (laser_fairseq/export/model_card.py): every number is the checkpoint's."""

import copy
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from laser_fairseq.cli.export_checkpoint import main
from laser_fairseq.export import model_card
from laser_fairseq.export import ExportError, export_checkpoint
from laser_fairseq.export.model_card import CardOptions, ModelCardError
from laser_fairseq.tiny_upstream import save_checkpoint
from test_analysis import laser_checkpoint_with_new_top_blocks
from laser_fairseq.checkout import REPO

STUDY = os.path.join(REPO, "examples", "laser_effect", "cnn64", "run1", "results.json")  # the first run: 3 seeds of every variant


def sha256(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def paper_config():
    with open(os.path.join(REPO, "examples", "laser", "config", "laser_hubert_base.yaml")) as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def laser(upstream, tmp_path_factory):
    """A LASER checkpoint of the tiny upstream whose cfg is the paper's config with every card value changed."""
    state = laser_checkpoint_with_new_top_blocks(upstream, trained=2)
    cfg = paper_config()
    cfg["criterion"].update(alpha=0.35, sdtw_weight=0.9, gamma=0.2, sigma=1.0, margin=1.3)
    cfg["task"].update(speed_factors=[0.85, 1.0, 1.15], pitch_shifts=[-3.0, 3.0], swap_views=False)
    cfg["optimization"].update(lr=[3e-5], max_update=4000, update_freq=[2])
    cfg["dataset"]["batch_size"] = 6
    cfg["model"].update(trainable_layers=2, proj_dim=128, upstream_path="/moved/away/tiny_hubert.pt")
    state["cfg"] = cfg
    state["optimizer_history"] = [{"num_updates": 1234}]
    path = str(tmp_path_factory.mktemp("laser") / "checkpoint_last.pt")
    save_checkpoint(state, path)
    return path, cfg


@pytest.fixture(scope="module")
def exported(laser, upstream, tmp_path_factory):
    path, _ = laser
    output = str(tmp_path_factory.mktemp("hf") / "laser_hf")
    report = export_checkpoint(path, output, fmt="hf", upstream=upstream, card=CardOptions(
        base_model="facebook/hubert-base-ls960", license="mit", effect_results=STUDY))
    with open(os.path.join(output, "README.md"), encoding="utf-8") as handle:
        return output, handle.read(), report


def front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def row(text, name):
    """The value cell of the settings table's row ``name``."""
    match = re.search(rf"^\| {re.escape(name)} \| (.*) \|$", text, re.MULTILINE)
    assert match, name
    return match.group(1)


def test_the_card_holds_the_checkpoints_settings(exported, laser):
    output, text, report = exported
    _, cfg = laser
    assert sorted(os.listdir(output)) == ["README.md", "config.json", "model.safetensors", "preprocessor_config.json"]
    assert report.num_updates == 1234 and row(text, "updates") == "1,234 (of `max_update` 4,000)"
    assert row(text, "trained blocks") == "top 2 of 4 (blocks [2, 3]); K = 2 frozen"  # make_tiny_hubert: 4 blocks
    assert row(text, "loss") == "0.9 × soft-DTW (gamma 0.2) + 0.35 × Contrastive-IDM (sigma 1, margin 1.3)"
    assert row(text, "perturbation") == ("speed factors 0.85, 1, 1.15; pitch shifts -3, 3 semitones; "
                                         "views swapped: false")
    assert row(text, "learning rate") == "3e-05" and float(row(text, "learning rate")) == cfg["optimization"]["lr"][0]
    assert row(text, "batch") == "6 pairs × update_freq 2 per GPU"
    assert row(text, "projection head") == "128 dims (dropped from the export)"
    assert row(text, "seed") == str(cfg["common"]["seed"])


def test_the_card_names_its_inputs_by_sha256(exported, laser, upstream):
    output, text, report = exported
    assert f"`checkpoint_last.pt`, sha256 `{sha256(laser[0])}`" in text
    assert f"`tiny_hubert.pt` (sha256 `{sha256(upstream)}`)" in text
    weights = sha256(os.path.join(output, "model.safetensors"))
    assert f"(`model.safetensors`): sha256 `{weights}`" in text and report.sha256 == weights
    assert f"(sha256 `{sha256(STUDY)}`)" in text


def test_the_effect_is_the_studys_mean_over_seeds(exported):
    _, text, _ = exported
    with open(STUDY) as handle:
        records = json.load(handle)["records"]
    laser_rows = [r for r in records if r["variant"] == "laser"]
    means = [sum(r[key] for r in laser_rows) / len(laser_rows) for key, _ in model_card.EFFECT_COLUMNS]
    expected = f"| laser | {len(laser_rows)} | " + " | ".join(f"{m:.3f}" for m in means) + " |"
    assert expected in text
    assert "| upstream | 1 | " in text and "phone_per_chance 1.000" in text
    with open(os.path.join(REPO, "examples", "laser_effect", "cnn64", "run1", "results.md")) as handle:
        assert "| laser | 3 | 0.493 ± 0.001 | 1.983 ± 0.012 |" in handle.read()  # the study's own table agrees
    assert "| laser | 3 | 0.493 | 1.983 | 0.973 | 0.885 |" in text


def test_front_matter_license_base_model_and_citation(exported):
    _, text, _ = exported
    meta = front_matter(text)
    assert meta == {"license": "mit", "base_model": "facebook/hubert-base-ls960", "library_name": "transformers",
                    "pipeline_tag": "feature-extraction",
                    "tags": ["laser", "hubert", "speech", "self-supervised-learning"]}
    assert "- Hub id: `facebook/hubert-base-ls960`" in text
    assert model_card.PAPER_BIBTEX in text
    with open(os.path.join(REPO, "docs", "citing.md"), encoding="utf-8") as handle:
        assert model_card.PAPER_BIBTEX in handle.read()  # the same BibTeX as docs/citing.md


def test_huggingface_hub_parses_the_card(exported):
    huggingface_hub = pytest.importorskip("huggingface_hub")
    _, text, _ = exported
    card = huggingface_hub.ModelCard(text)  # parsing only: no network
    assert card.data.license == "mit" and card.data.base_model == "facebook/hubert-base-ls960"
    assert card.data.library_name == "transformers" and "laser" in card.data.tags
    assert "## LASER settings" in card.text


def test_without_options_the_license_is_unknown_and_said_so(laser, upstream, tmp_path, capsys):
    output = str(tmp_path / "hf")
    main(["--checkpoint", laser[0], "--output", output, "--format", "hf", "--upstream", upstream])  # the command
    assert f"model card: {os.path.join(output, 'README.md')}" in capsys.readouterr().out
    with open(os.path.join(output, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert front_matter(text)["license"] == "unknown" and "base_model" not in front_matter(text)
    assert "Unknown: no license was given (`--license`)" in text and "not given (`--base-model`)" in text
    assert "No study was given (`--effect-results`)" in text


def test_card_options_are_refused_for_other_formats_and_bad_studies(laser, upstream, tmp_path):
    with pytest.raises(ExportError, match="only --format hf writes"):
        export_checkpoint(laser[0], str(tmp_path / "x.pt"), fmt="fairseq", upstream=upstream,
                          card=CardOptions(license="mit"))
    bad = tmp_path / "results.json"
    bad.write_text(json.dumps({"rows": []}))
    with pytest.raises(ModelCardError, match="not a study's results.json"):
        export_checkpoint(laser[0], str(tmp_path / "hf"), fmt="hf", upstream=upstream,
                          card=CardOptions(effect_results=str(bad)))
    assert not os.path.exists(tmp_path / "x.pt") and not os.path.exists(tmp_path / "hf")


def test_settings_fall_back_to_the_config_defaults():
    settings = model_card.laser_settings({"model": {"trainable_layers": 3}}, None, 12)
    assert (settings.frozen_layers, settings.alpha, settings.sdtw_weight, settings.num_updates) == (9, 0.4, 1.0, None)
    text = model_card.model_card_text("wavlm", settings, "c.pt", "0" * 64, "WavLM-Base.pt", None, "1" * 64)
    assert row(text, "updates").startswith("unknown") and "K = 9 frozen" in text and "WavLMModel" in text


def test_the_docs_push_commands_fit_the_installed_huggingface_hub():
    """docs/huggingface.md's publishing block, checked offline: the imported names exist, every call binds to
    their signatures, and the CLI's login command exists (nothing reaches the network)."""
    import ast
    import inspect

    huggingface_hub = pytest.importorskip("huggingface_hub")
    with open(os.path.join(REPO, "docs", "huggingface.md"), encoding="utf-8") as handle:
        doc = handle.read()
    block = doc.split("python - <<'PY'\nfrom huggingface_hub import create_repo, upload_folder")[1].split("PY\n```")[0]
    tree = ast.parse("from huggingface_hub import create_repo, upload_folder" + block)
    calls = {node.func.id: node for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Name)}
    assert set(calls) == {"create_repo", "upload_folder"}
    for name, call in calls.items():
        signature = inspect.signature(getattr(huggingface_hub, name))
        signature.bind(*[None] * len(call.args), **{keyword.arg: None for keyword in call.keywords})
    assert "RepoUrl" in str(inspect.signature(huggingface_hub.create_repo).return_annotation)
    assert huggingface_hub.RepoUrl("https://huggingface.co/YOUR_NAME/laser-hubert-base").repo_id == (
        "YOUR_NAME/laser-hubert-base")  # what create_repo returns, parsed offline
    assert "hf auth login" in doc
    hf = os.path.join(os.path.dirname(sys.executable), "hf")
    done = subprocess.run([hf, "auth", "login", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "Usage: hf auth login" in done.stdout
    assert "ModelCard.load(" in doc and hasattr(huggingface_hub.ModelCard, "push_to_hub")
