"""Commands in the project's markdown files: find them, check them without running, or run them.

The convention (docs/contributing.md, "Commands in the docs"): the last non-blank line before a fenced
block may be a marker

- ``<!-- run: tiny -->``: executed, block after block in document order, in one sandbox per file that looks
  like the repository root (tiny upstreams and a LibriSpeech-layout tree stand in for the placeholders
  below; every ``fairseq-hydra-train`` gets ``TINY_OVERRIDES`` appended);
- ``<!-- run: syntax -->``: needs a GPU, real data, the network or too much time, so it is checked without
  running: ``bash -n``; each ``scripts/NAME.py`` (``benchmarks/``, ``dev/``) call parsed by that command's own ``parse_args`` (an
  argument that is only a shell variable, ``$k``, is parsed as ``1``); each
  ``fairseq-hydra-train`` call composed by hydra with fairseq's schema and the registered task / model /
  criterion dataclasses (unknown or mistyped fields and unset ``???`` values fail); ``make`` targets and
  ``tests/`` paths must exist; Python is compiled;
- ``<!-- run: text -->``: shown, not run (a synopsis, an output, a file's content); not allowed on
  bash / python blocks.

A bash or python block without a marker, or a block without a language that calls a project command
(``scripts/*.py``, ``benchmarks/*.py``, ``dev/*.py``, ``fairseq-hydra-train``, ``torchrun``, ``make``, ``pytest``) without one, is an error: a
command cannot be left unchecked by forgetting its marker. Blocks in other languages (yaml, toml, ...) are
never commands.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

MARKERS = ("tiny", "syntax", "text")
MARKER = re.compile(r"^\s*<!--\s*run:\s*(\S+)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
CODE_LANGUAGES = SHELL_LANGUAGES | {"python", "py"}
TOOL_FOLDERS = ("scripts", "benchmarks", "dev")  # user commands' shims, benchmarks, development tools
PROJECT_COMMAND = re.compile(r"(^|[\s/])((?:scripts|benchmarks|dev)/[\w-]+\.py|fairseq-hydra-train|torchrun|pytest)\b"
                             r"|^\s*make\s+\w", re.M)

# Placeholders of the docs -> files the tiny sandbox provides (paths relative to the sandbox).
PLACEHOLDERS = {
    "/data/LibriSpeech": "data/LibriSpeech",
    "/models/hubert_base_ls960.pt": "models/hubert_base_ls960.pt",
    "/models/WavLM-Base.pt": "models/WavLM-Base.pt",
}
# Appended to every fairseq-hydra-train of a tiny block (the last value of a key wins in hydra).
TINY_OVERRIDES = (
    "optimization.max_update=2", "common.cpu=true", "dataset.num_workers=0", "dataset.batch_size=2",
    "task.max_sample_size=32000", "dataset.disable_validation=true",
)
SHELL_VARIABLE = re.compile(r"^\$(\w+|\{\w+\})$")  # an argument that is only a variable is checked as "1"
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ">", ">>", "<", "<<", "2>", "2>&1", "$"}


@dataclass(frozen=True)
class Block:
    """One fenced block of a markdown file; ``line`` is the 1-based line of its opening fence."""

    path: str
    line: int
    language: str
    text: str
    marker: Optional[str]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


# ------------------------------------------------------------------------------------------------ reading


NOT_DOCS = {"outputs", "runs", "mutants", "build", "node_modules", "__pycache__"}  # outside git: skipped


def doc_files(repo: str) -> List[str]:
    """Every markdown file of the repository (tracked or new, not ignored by git), relative to ``repo``."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
                                cwd=repo, capture_output=True, text=True)
    except FileNotFoundError:  # no git on this machine
        listed = None
    if listed is not None and listed.returncode == 0:
        return sorted(path for path in set(listed.stdout.split()) if os.path.exists(os.path.join(repo, path)))
    found = []
    for folder, subfolders, files in os.walk(repo):
        subfolders[:] = [name for name in subfolders if not name.startswith(".") and name not in NOT_DOCS]
        found += [os.path.relpath(os.path.join(folder, name), repo) for name in files if name.endswith(".md")]
    return sorted(found)


def read_blocks(path: str, text: Optional[str] = None) -> List[Block]:
    """The fenced blocks of a markdown file, each with the marker on its last non-blank line before it."""
    lines = (open(path, encoding="utf-8").read() if text is None else text).splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, fence, language = opening.groups()
        end = index + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if end == len(lines):
            raise ValueError(f"{path}:{index + 1}: fenced block is never closed")
        body = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[index + 1:end])
        blocks.append(Block(path, index + 1, language.lower(), body + "\n", _marker_before(lines, index)))
        index = end + 1
    return blocks


def _marker_before(lines: Sequence[str], index: int) -> Optional[str]:
    previous = index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    found = MARKER.match(lines[previous]) if previous >= 0 else None
    return found.group(1) if found else None


def marker_errors(block: Block) -> List[str]:
    """Why a block's marking breaks the convention (empty when it is fine)."""
    if block.marker is not None and block.marker not in MARKERS:
        return [f"{block.where}: unknown marker 'run: {block.marker}' (use one of {', '.join(MARKERS)})"]
    if block.marker is None and block.language in CODE_LANGUAGES:
        return [f"{block.where}: {block.language} block without a marker: put <!-- run: tiny --> or "
                f"<!-- run: syntax --> on the line before it"]
    if block.marker is None and not block.language and PROJECT_COMMAND.search(block.text):
        return [f"{block.where}: block calls a project command but has no marker: put <!-- run: tiny -->, "
                f"<!-- run: syntax --> or (not a command) <!-- run: text --> on the line before it"]
    if block.marker == "text" and block.language in CODE_LANGUAGES:
        return [f"{block.where}: a {block.language} block is a command: mark it tiny or syntax, not text"]
    return []


# ------------------------------------------------------------------------------------------------ links

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def heading_anchors(path: str) -> set:
    """GitHub's anchors of a markdown file's headings (lower case, punctuation dropped, spaces -> '-')."""
    anchors, seen, in_fence = set(), {}, None
    for line in open(path, encoding="utf-8").read().splitlines():
        fence = FENCE.match(line)
        if fence and (in_fence is None or line.strip().startswith(in_fence)):
            in_fence = None if in_fence else fence.group(2)
            continue
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if in_fence or not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(path: str) -> Iterator[Tuple[int, str]]:
    """(line, target) of every link outside fenced blocks that is not a URL."""
    in_fence = None
    for number, line in enumerate(open(path, encoding="utf-8").read().splitlines(), start=1):
        fence = FENCE.match(line)
        if fence and (in_fence is None or line.strip().startswith(in_fence)):
            in_fence = None if in_fence else fence.group(2)
            continue
        if in_fence:
            continue
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):
                yield number, target


def link_errors(repo: str, doc: str) -> List[str]:
    """Relative links of ``doc`` (relative to ``repo``) whose file or heading anchor does not exist."""
    errors, source = [], os.path.join(repo, doc)
    for number, target in relative_links(source):
        file_part, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(source), file_part)) if file_part else source
        if not os.path.exists(resolved):
            errors.append(f"{doc}:{number}: link to {target}: {os.path.relpath(resolved, repo)} does not exist")
        elif anchor and resolved.endswith(".md") and anchor not in heading_anchors(resolved):
            errors.append(f"{doc}:{number}: link to {target}: no heading with anchor #{anchor} "
                          f"in {os.path.relpath(resolved, repo)}")
    return errors


def reachable_docs(repo: str, start: str = "README.md") -> set:
    """Markdown files reachable from ``start`` by relative links, relative to ``repo``."""
    seen, queue = {start}, [start]
    while queue:
        doc = queue.pop()
        for _, target in relative_links(os.path.join(repo, doc)):
            file_part = target.partition("#")[0]
            if not file_part.endswith(".md"):
                continue
            linked = os.path.relpath(os.path.normpath(os.path.join(repo, os.path.dirname(doc), file_part)), repo)
            if linked not in seen and os.path.exists(os.path.join(repo, linked)):
                seen.add(linked)
                queue.append(linked)
    return seen


# ------------------------------------------------------------------------------------------------ commands


def shell_commands(text: str) -> Tuple[List[List[str]], List[Tuple[List[str], str]]]:
    """Simple commands of a bash script as token lists, and (command, body) of its here-documents."""
    text = re.sub(r"\$\(which ([\w-]+)\)", r"\1", text.replace("\\\n", " "))  # torchrun $(which X) -> X
    lines, heredocs, kept = text.splitlines(), [], []
    index = 0
    while index < len(lines):
        line = lines[index]
        kept.append(line)
        heredoc = re.search(r"<<-?\s*(['\"]?)(\w+)\1", line)
        index += 1
        if heredoc:
            body = []
            while index < len(lines) and lines[index].strip() != heredoc.group(2):
                body.append(lines[index])
                index += 1
            index += 1
            heredocs.append((_split(line[:heredoc.start()]), "\n".join(body) + "\n"))
    commands = []
    for line in kept:
        current: List[str] = []
        for token in _split(line):
            if token in SEPARATORS or set(token) <= set("&|;()<>$"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands, heredocs


def _split(line: str) -> List[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    return list(lexer)


def script_call(command: Sequence[str]) -> Optional[Tuple[str, List[str]]]:
    """(``FOLDER/NAME.py``, its arguments) when the command runs a tool of scripts/, benchmarks/ or dev/."""
    for position, token in enumerate(command):
        called = re.search(r"(?:^|/)((?:scripts|benchmarks|dev)/[\w-]+\.py)$", token)
        if called:
            return called.group(1), list(command[position + 1:])
    return None


def hydra_call(command: Sequence[str]) -> Optional[List[str]]:
    """The arguments of ``fairseq-hydra-train`` when the command runs it (directly or under torchrun/srun)."""
    for position, token in enumerate(command):
        if token == "fairseq-hydra-train" or token.endswith("/fairseq-hydra-train"):
            return list(command[position + 1:])
    return None


def load_script(repo: str, name: str):
    """The module whose ``parse_args`` / ``main`` a tool runs (its ``main`` is not run): for ``scripts/NAME.py``
    (or a bare NAME) ``laser_fairseq.cli.NAME``, for ``benchmarks/NAME.py`` and ``dev/NAME.py`` the module of
    that package of the repository root."""
    folder, _, file_name = name.rpartition("/")
    folder, name = folder or "scripts", file_name[:-3] if file_name.endswith(".py") else file_name
    path = os.path.join(repo, folder, f"{name}.py")
    if folder not in TOOL_FOLDERS or not os.path.exists(path):
        raise FileNotFoundError(f"{folder}/{name}.py does not exist")
    module_name = f"laser_fairseq.cli.{name}" if folder == "scripts" else f"{folder}.{name}"
    if importlib.util.find_spec(module_name) is None:
        raise ModuleNotFoundError(f"{folder}/{name}.py has no front door {module_name} (docs/contributing.md#conventions)")
    module = importlib.import_module(module_name)
    if not hasattr(module, "parse_args"):
        raise AttributeError(f"{module_name} ({folder}/{name}.py) has no parse_args(argv)")
    return module


def parse_script_args(repo: str, name: str, arguments: Sequence[str]) -> Optional[str]:
    """None if the script's own parser accepts ``arguments``, else its error message."""
    module = load_script(repo, name)
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured), contextlib.redirect_stdout(io.StringIO()):
            module.parse_args(list(arguments))
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            return captured.getvalue().strip() or f"exit status {exit_.code}"
    return None


def compose_fairseq_config(repo: str, arguments: Sequence[str]):
    """What fairseq-hydra-train would train with: the config composed by hydra with fairseq's schema and the
    overrides, merged with the registered task / model / criterion dataclasses (``add_defaults``).

    Raises on an unknown config, key, or a value of the wrong type; returns the config.
    """
    from laser_fairseq import quiet_fairseq  # noqa: F401  (before fairseq: keeps logging as it is)
    import laser_fairseq.models  # noqa: F401  (registers the laser model and hubert_ctc_fixed)
    import laser_fairseq.tasks  # noqa: F401  (registers the laser task and criterion)
    from fairseq.dataclass.initialize import add_defaults, hydra_init
    from hydra import compose, initialize_config_dir

    config_dir, config_name, overrides = None, "config", []
    items = list(arguments)
    while items:
        item = items.pop(0)
        if item in ("--config-dir", "-cd", "--config-name", "-cn"):
            value = items.pop(0)
            if item in ("--config-dir", "-cd"):
                config_dir = value
            else:
                config_name = value
        elif item.startswith("-"):
            raise ValueError(f"fairseq-hydra-train option {item} is not understood by the doc check")
        else:
            overrides.append(item)
    if config_dir is None:
        raise ValueError("fairseq-hydra-train without --config-dir")
    hydra_init(config_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hydra 1.1 compatibility notices, as fairseq-hydra-train's
        with initialize_config_dir(config_dir=os.path.join(repo, config_dir), version_base="1.1"):
            cfg = compose(config_name=config_name, overrides=overrides)
    add_defaults(cfg)
    return cfg


def missing_values(cfg) -> List[str]:
    """Keys of the composed config still at ``???``."""
    from omegaconf import OmegaConf

    return sorted(OmegaConf.missing_keys(cfg))


def make_targets(repo: str) -> set:
    with open(os.path.join(repo, "Makefile")) as makefile:
        return set(re.findall(r"^([\w.-]+)\s*:(?!=)", makefile.read(), re.M))


def syntax_errors(block: Block, repo: str) -> List[str]:
    """Problems found checking a block without running it (see the module docstring)."""
    if block.language in ("python", "py"):
        return _python_errors(block.text, block.where)
    checked = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
    if checked.returncode != 0:
        return [f"{block.where}: bash -n: {checked.stderr.strip()}"]
    commands, heredocs = shell_commands(block.text)
    errors = []
    for command in commands:
        errors += [f"{block.where}: {problem}" for problem in _command_errors(command, repo)]
    for command, body in heredocs:
        if command and os.path.basename(command[0]).startswith("python"):
            errors += _python_errors(body, f"{block.where} (here-document)")
    return errors


@contextlib.contextmanager
def _launcher_environment(command: Sequence[str]):
    """The variables torchrun gives each rank (for ``${oc.env:RANK}`` in overrides), during the check."""
    launched = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"} if "torchrun" in command else {}
    saved = {name: os.environ.get(name) for name in launched}
    os.environ.update({name: value for name, value in launched.items() if saved[name] is None})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def _python_errors(text: str, where: str) -> List[str]:
    try:
        compile(text, where, "exec")
    except SyntaxError as error:
        return [f"{where}: Python syntax error: {error}"]
    return []


def _command_errors(command: List[str], repo: str) -> List[str]:
    shown = " ".join(command)
    script = script_call(command)
    if script:
        name, arguments = script
        arguments = ["1" if SHELL_VARIABLE.match(argument) else argument for argument in arguments]
        try:
            problem = parse_script_args(repo, name, arguments)
        except (FileNotFoundError, AttributeError) as error:
            return [f"{shown}: {error}"]
        return [f"{shown}: {name} refuses the arguments: {problem}"] if problem else []
    hydra_arguments = hydra_call(command)
    if hydra_arguments is not None:
        try:
            with _launcher_environment(command):
                missing = missing_values(compose_fairseq_config(repo, hydra_arguments))
        except Exception as error:  # hydra / omegaconf raise many types; each is a broken command here
            return [f"{shown}: fairseq-hydra-train would refuse it: {type(error).__name__}: {error}"]
        return [f"{shown}: config values left at ???: {', '.join(missing)}"] if missing else []
    if os.path.basename(command[0]).startswith("python") and "-c" in command[:-1]:
        return _python_errors(command[command.index("-c") + 1], f"{shown[:60]}... (python -c)")
    if command[0] == "make":
        unknown = [t for t in command[1:] if not t.startswith("-") and "=" not in t and t not in make_targets(repo)]
        return [f"{shown}: no make target {', '.join(unknown)}"] if unknown else []
    if "pytest" in command:
        paths = [t.split("::")[0] for t in command if t.startswith("tests")]
        return [f"{shown}: {p} does not exist" for p in paths if not os.path.exists(os.path.join(repo, p))]
    return []


# ------------------------------------------------------------------------------------------------ running


def make_sandbox(folder: str, repo: str, resources: Dict[str, str]) -> str:
    """A folder that looks like the repository root to a doc's commands, with the placeholders' files.

    The code, configs and bundled corpus are symlinks into ``repo``; ``.venv`` points at the running
    interpreter's environment; ``resources`` maps sandbox-relative paths (PLACEHOLDERS' values) to files or
    folders, linked in. Everything a command writes lands in the sandbox.
    """
    os.makedirs(folder, exist_ok=True)
    for name in ("laser_fairseq", *TOOL_FOLDERS, "examples", "Makefile", "pyproject.toml", "constraints.txt"):
        os.symlink(os.path.join(repo, name), os.path.join(folder, name))
    os.makedirs(os.path.join(folder, "manifests"))
    os.symlink(os.path.join(repo, "manifests", "demo"), os.path.join(folder, "manifests", "demo"))
    os.symlink(sys.prefix, os.path.join(folder, ".venv"))
    for relative, source in resources.items():
        os.makedirs(os.path.dirname(os.path.join(folder, relative)), exist_ok=True)
        os.symlink(source, os.path.join(folder, relative))
    return folder


def with_placeholders(text: str, sandbox: str) -> str:
    """The block's text with every placeholder path replaced by the sandbox's stand-in."""
    for placeholder, relative in PLACEHOLDERS.items():
        text = re.sub(rf"(?<![\w.$/-]){re.escape(placeholder)}", os.path.join(sandbox, relative), text)
    return text


def run_tiny(block: Block, sandbox: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a tiny block in the sandbox (bash with ``set -euo pipefail``, or python); output combined."""
    text = with_placeholders(block.text, sandbox)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", PYTHONPATH=sandbox,
               PATH=os.path.join(sandbox, ".venv", "bin") + os.pathsep + os.environ.get("PATH", ""))
    if block.language in ("python", "py"):
        command = [os.path.join(sandbox, ".venv", "bin", "python"), "-c", text]
    else:
        tiny = " ".join(TINY_OVERRIDES)
        preamble = f'set -euo pipefail\nfairseq-hydra-train() {{ command fairseq-hydra-train "$@" {tiny}; }}\n'
        command = ["bash", "-c", preamble + text]
    return subprocess.run(command, cwd=sandbox, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)


def remove_sandbox(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
