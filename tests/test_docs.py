"""The docs' commands run (tiny blocks) or are checked without running (syntax blocks); links resolve.

The convention is in docs/contributing.md ("Commands in the docs") and tests/doc_blocks.py. The tests at the
end feed the checker deliberately broken copies, to show that a broken command, an unmarked command or a
dead link does fail it.
"""

import dataclasses
import os
import re
import shutil
import textwrap

import pytest
import soundfile as sf

import doc_blocks
from doc_blocks import Block, read_blocks
from laser_fairseq.checkout import REPO

DOCS = doc_blocks.doc_files(REPO)
BLOCKS = [block for doc in DOCS for block in read_blocks(os.path.join(REPO, doc))]
README_LIMIT = 12 * 1024


def relative(block: Block) -> str:
    return f"{os.path.relpath(block.path, REPO)}:{block.line}"


def docs_with_tiny_blocks():
    return sorted({os.path.relpath(block.path, REPO) for block in BLOCKS if block.marker == "tiny"})


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def librispeech(tmp_path_factory):
    """A LibriSpeech-layout train-clean-100 made of demo-corpus audio (2 speakers x 1 chapter x 5 utterances)
    and dev-clean, dev-other, test-clean, test-other (1 speaker x 2 utterances each)."""
    root = tmp_path_factory.mktemp("librispeech") / "LibriSpeech"
    demo = os.path.join(REPO, "manifests", "demo")
    with open(os.path.join(demo, "train.tsv")) as manifest, open(os.path.join(demo, "train.wrd")) as words:
        lines = manifest.read().splitlines()[1:]
        transcripts = words.read().splitlines()
    for speaker, voice in ((101, "v1"), (102, "v2")):
        chapter = root / "train-clean-100" / str(speaker) / "7"
        chapter.mkdir(parents=True)
        entries = [(line.split("\t")[0], text) for line, text in zip(lines, transcripts) if f"_{voice}." in line][:5]
        trans = []
        for number, (audio, text) in enumerate(entries):
            utterance = f"{speaker}-7-{number:04d}"
            shutil.copy(os.path.join(demo, "audio", audio), chapter / f"{utterance}.flac")
            trans.append(f"{utterance} {text}")
        (chapter / f"{speaker}-7.trans.txt").write_text("\n".join(trans) + "\n")
    for number, subset in enumerate(("dev-clean", "dev-other", "test-clean", "test-other")):  # 2 utterances each
        speaker = 201 + number
        chapter = root / subset / str(speaker) / "8"
        chapter.mkdir(parents=True)
        entries = [(line.split("\t")[0], text) for line, text in zip(lines, transcripts) if "_v3." in line]
        trans = []
        for index, (audio, text) in enumerate(entries[2 * number:2 * number + 2]):
            utterance = f"{speaker}-8-{index:04d}"
            shutil.copy(os.path.join(demo, "audio", audio), chapter / f"{utterance}.flac")
            trans.append(f"{utterance} {text}")
        (chapter / f"{speaker}-8.trans.txt").write_text("\n".join(trans) + "\n")
    return str(root)


@pytest.fixture(scope="session")
def tiny_resources(tmp_path_factory, upstream, librispeech):
    """Sandbox path -> file for every placeholder of doc_blocks.PLACEHOLDERS."""
    from laser_fairseq.tiny_upstream import make_tiny_unilm_checkpoint, save_checkpoint

    wavlm = str(tmp_path_factory.mktemp("wavlm") / "tiny_wavlm.pt")
    save_checkpoint(make_tiny_unilm_checkpoint(), wavlm)
    stand_ins = {"/data/LibriSpeech": librispeech, "/models/hubert_base_ls960.pt": upstream,
                 "/models/WavLM-Base.pt": wavlm}
    assert set(stand_ins) == set(doc_blocks.PLACEHOLDERS)
    return {doc_blocks.PLACEHOLDERS[name]: path for name, path in stand_ins.items()}


# ------------------------------------------------------------------------------------------------ the docs


def test_every_block_follows_the_marker_convention():
    errors = [error for block in BLOCKS for error in doc_blocks.marker_errors(block)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.marker == "syntax"], ids=relative)
def test_syntax_block(block):
    errors = doc_blocks.syntax_errors(block, REPO)
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("doc", docs_with_tiny_blocks())
def test_tiny_blocks_run(doc, tiny_resources, tmp_path):
    sandbox = doc_blocks.make_sandbox(str(tmp_path / "repo"), REPO, tiny_resources)
    for block in read_blocks(os.path.join(REPO, doc)):
        if block.marker != "tiny":
            continue
        result = doc_blocks.run_tiny(block, sandbox)
        assert result.returncode == 0, f"{relative(block)} failed (exit {result.returncode}):\n{result.stdout[-6000:]}"


def test_relative_links_and_anchors_resolve():
    errors = [error for doc in DOCS for error in doc_blocks.link_errors(REPO, doc)]
    assert not errors, "\n".join(errors)


def test_every_doc_is_reachable_from_the_readme():
    unreachable = sorted(set(DOCS) - doc_blocks.reachable_docs(REPO))
    assert not unreachable, f"not reachable by links from README.md: {unreachable}"


def test_the_readme_is_short():
    size = os.path.getsize(os.path.join(REPO, "README.md"))
    assert size <= README_LIMIT, f"README.md has {size} bytes; move details next to what they describe"


SCRIPTS = sorted(f"{folder}/{name}" for folder in doc_blocks.TOOL_FOLDERS
                 for name in os.listdir(os.path.join(REPO, folder)) if name.endswith(".py") and name != "__init__.py")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help_and_is_named_in_a_doc(script, capsys):
    module = doc_blocks.load_script(REPO, script)
    with pytest.raises(SystemExit) as exit_:
        module.parse_args(["--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out
    docs_text = "".join(open(os.path.join(REPO, doc), encoding="utf-8").read() for doc in DOCS)
    assert script in docs_text, f"{script} is not named in any markdown file"


def documented_fields(title: str) -> set:
    """Field names in the first column of the table under ``**<title>**`` in examples/laser/README.md."""
    text = open(os.path.join(REPO, "examples", "laser", "README.md"), encoding="utf-8").read()
    table = text.split(f"**{title}**", 1)[1].split("\n\n", 2)[1]
    return {name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])}


@pytest.mark.parametrize("title, config", [
    ("task `laser`", "laser_fairseq.tasks.laser_task.LaserTaskConfig"),
    ("model `laser`", "laser_fairseq.models.laser_model.LaserModelConfig"),
    ("criterion `laser`", "laser_fairseq.criterions.laser_criterion.LaserCriterionConfig"),
])
def test_config_field_tables_list_every_field(title, config):
    module_name, _, class_name = config.rpartition(".")
    dataclass_ = getattr(__import__(module_name, fromlist=[class_name]), class_name)
    fields = {field.name for field in dataclasses.fields(dataclass_)} - {"_name"}
    assert documented_fields(title) == fields


# ------------------------------------------------------------------------------------------------ the checker


def blocks_of(tmp_path, markdown: str):
    path = tmp_path / "broken.md"
    path.write_text(textwrap.dedent(markdown))
    return read_blocks(str(path))


LASER_DEMO = ("fairseq-hydra-train --config-dir examples/laser/config --config-name demo task.data=/d "
              "model.upstream_path=/m.pt checkpoint.save_dir=/s common.tensorboard_logdir=/t")
LASER_BASE = ("--config-dir examples/laser/config --config-name laser_hubert_base task.data=/d "
              "model.upstream_path=/m.pt")
HYDRA = f"fairseq-hydra-train {LASER_BASE}"
TORCHRUN = "torchrun --nproc_per_node 2 $(which fairseq-hydra-train)"
EXPORT = "python scripts/export_checkpoint.py --checkpoint c.pt --output o.pt"
PREPARE = ".venv/bin/python scripts/prepare_librispeech.py /data/LibriSpeech"
# (a command that passes, the same command broken, what the error names)
GOOD_AND_BROKEN = [
    (f"{LASER_DEMO} criterion.alpha=0", f"{LASER_DEMO} criterion.alpah=0", "Could not override 'criterion.alpah'"),
    (f"{HYDRA} criterion.alpha=0.2", f"{HYDRA} criterion.alpha=high", "could not be converted to Float"),
    (f"{HYDRA} task.swap_views=false", f"{HYDRA} task.swap_view=false", "Could not override 'task.swap_view'"),
    (f"{TORCHRUN} {LASER_BASE}", f"{TORCHRUN} {LASER_BASE.replace('base', 'bas')}", "laser_hubert_bas"),
    (HYDRA, HYDRA.replace(" model.upstream_path=/m.pt", ""), "left at ???: model.upstream_path"),
    (f"{EXPORT} --format s3prl", f"{EXPORT} --format onnx", "invalid choice: 'onnx'"),
    (f"{PREPARE} --dest m", f"{PREPARE} --destination m", "--destination"),
    ("for n in 2 4; do python scripts/make_tiny_upstream.py --kind wavlm --output x$n.pt --layers $n; done",
     "for n in 2 4; do python scripts/make_tiny_upstream.py --kind wavlm --output x$n.pt --layers two; done",
     "invalid int value"),
    ("python scripts/run_demo.py", "python scripts/run_dem.py", "scripts/run_dem.py does not exist"),
    ("make demo", "make demos", "no make target demos"),
    ("python -m pytest -q tests/test_criterion.py", "python -m pytest -q tests/test_criterion_x.py", "does not exist"),
    ("python -c \"print('ok')\"", "python -c \"print('ok'\"", "Python syntax error"),
    ("python - <<'PY'\nprint('ok')\nPY", "python - <<'PY'\nprint('ok'\nPY", "here-document"),
    ("for x in a b; do echo $x; done", "for x in a b; do echo $x; dne", "bash -n"),
]


@pytest.mark.parametrize("good, broken, message", GOOD_AND_BROKEN, ids=[m for _, _, m in GOOD_AND_BROKEN])
def test_the_syntax_check_fails_a_broken_copy_and_passes_the_original(tmp_path, good, broken, message):
    (good_block,), (broken_block,) = (
        blocks_of(tmp_path, f"<!-- run: syntax -->\n```bash\n{command}\n```\n") for command in (good, broken))
    assert doc_blocks.syntax_errors(good_block, REPO) == []
    errors = doc_blocks.syntax_errors(broken_block, REPO)
    assert len(errors) == 1 and message in errors[0] and "broken.md:2" in errors[0], errors


def test_python_blocks_are_compiled(tmp_path):
    (block,) = blocks_of(tmp_path, "<!-- run: syntax -->\n```python\nprint('a'\n```\n")
    assert "Python syntax error" in doc_blocks.syntax_errors(block, REPO)[0]


def test_a_failing_tiny_block_fails_and_stops_at_the_failing_command(tmp_path, tiny_resources):
    sandbox = doc_blocks.make_sandbox(str(tmp_path / "repo"), REPO, tiny_resources)
    (broken, passing) = blocks_of(tmp_path, """\
        <!-- run: tiny -->
        ```bash
        ls /data/LibriSpeech/train-clean-100 models/hubert_base_ls960.pt
        python scripts/make_tiny_upstream.py --kind hubret --output models/x.pt
        echo after the failure
        ```

        <!-- run: tiny -->
        ```bash
        ls /data/LibriSpeech/train-clean-100 models/hubert_base_ls960.pt manifests/demo/train.tsv .venv/bin/python
        type fairseq-hydra-train | grep -q optimization.max_update=2
        ```
        """)
    result = doc_blocks.run_tiny(broken, sandbox)
    assert result.returncode != 0 and "invalid choice: 'hubret'" in result.stdout
    assert "after the failure" not in result.stdout
    assert doc_blocks.run_tiny(passing, sandbox).returncode == 0, "the placeholders, links and tiny overrides"


def test_unmarked_or_wrongly_marked_commands_are_refused(tmp_path):
    blocks = blocks_of(tmp_path, """\
        ```bash
        echo no marker
        ```

        ```
        python scripts/run_demo.py --max-update 2
        ```

        <!-- run: text -->
        ```python
        print(1)
        ```

        <!-- run: quick -->
        ```
        make demo
        ```

        <!-- run: text -->
        ```
        python scripts/run_demo.py [--kind hubert|wavlm]
        ```

        ```
        [2026-12-02][fairseq.trainer][INFO] - an output block
        ```

        ```yaml
        # run with fairseq-hydra-train --config-dir ...
        task: {_name: laser}
        ```
        """)
    errors = [doc_blocks.marker_errors(block) for block in blocks]
    assert [len(e) for e in errors] == [1, 1, 1, 1, 0, 0, 0], errors
    assert "without a marker" in errors[0][0] and "calls a project command" in errors[1][0]
    assert "not text" in errors[2][0] and "unknown marker" in errors[3][0]


def test_placeholders_are_mapped_only_where_they_stand_alone():
    text = "x /data/LibriSpeech --y=/models/WavLM-Base.pt $PWD/models/hubert_base_ls960.pt a/data/LibriSpeech\n"
    assert doc_blocks.with_placeholders(text, "/S") == (
        "x /S/data/LibriSpeech --y=/S/models/WavLM-Base.pt $PWD/models/hubert_base_ls960.pt a/data/LibriSpeech\n")


def test_dead_links_and_anchors_are_reported(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text(
        "# Title A\n\n## Some `code` (here)\n\nback to [readme](../README.md#top)\n")
    (tmp_path / "README.md").write_text(textwrap.dedent("""\
        # Top

        [fine](docs/a.md#some-code-here), [also](#top), [gone](docs/b.md), [bad anchor](docs/a.md#nothing)
        [web](https://example.org/x.md) `[not a link](c.md)`

        ```
        [in a block](d.md)
        ```
        """))
    errors = doc_blocks.link_errors(str(tmp_path), "README.md") + doc_blocks.link_errors(str(tmp_path), "docs/a.md")
    assert errors == ["README.md:3: link to docs/b.md: docs/b.md does not exist",
                      "README.md:3: link to docs/a.md#nothing: no heading with anchor #nothing in docs/a.md"]
    assert doc_blocks.reachable_docs(str(tmp_path)) == {"README.md", "docs/a.md"}


def test_the_superb_cost_estimate_follows_from_its_assumptions():
    """docs/superb.md's full-scale cost paragraph: every number follows from its ``cost:`` line, and the step
    count is the full preset's (SUPERB's 100,000)."""
    from laser_fairseq.evaluation.superb_pr import PRESETS

    text = open(os.path.join(REPO, "docs", "superb.md")).read()
    line = re.search(r"<!-- cost: (.*?) -->", text)
    assert line, "docs/superb.md: no <!-- cost: ... --> line"
    cost = {key: float(value) for key, value in (item.split("=") for item in line.group(1).split())}
    assert cost["steps"] == PRESETS["full"]["total_steps"]
    paragraph = text[line.end():].split("\n\n")[0]
    train_h = cost["steps"] * cost["train_s_per_step"] / 3600
    eval_h = cost["evals"] * cost["eval_s"] / 3600
    total_h = train_h + eval_h + cost["test_s"] / 3600
    assert cost["evals"] == cost["steps"] / PRESETS["full"]["eval_step"]
    assert f"{int(cost['steps']):,} steps × {cost['train_s_per_step']:g} s ≈ **{train_h:.1f} h**" in paragraph
    assert f"{int(cost['evals'])} times × ~{cost['eval_s']:g} s ≈ **{eval_h:.1f} h**" in paragraph
    assert f"≈ {cost['test_s'] / 60:g} min" in paragraph
    assert f"≈ **{total_h:.1f} GPU-hours**" in paragraph
