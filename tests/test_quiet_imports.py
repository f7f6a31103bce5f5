"""Importing laser_fairseq leaves the caller's logging setup alone; the losses need no fairseq; registration
with fairseq still happens through a user-dir and through plain imports.

(fairseq-hydra-train runs keep fairseq's own logging: test_training.py and test_resume.py parse it.)
"""

import ast
import json
import os
import pkgutil
import subprocess
import sys

import pytest

import laser_fairseq
from laser_fairseq.checkout import REPO

PACKAGE = os.path.join(REPO, "laser_fairseq")


def run_python(code: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


ROOT_STATE = "(logging.getLogger().level, list(logging.getLogger().handlers))"

# One fresh interpreter, importing step by step what a plain script would; it reports what it saw as JSON.
PLAIN_SCRIPT = f"""
import json, logging, sys
seen = {{}}
before = {ROOT_STATE}
import laser_fairseq.losses
seen["losses: logging unchanged"] = {ROOT_STATE} == before
seen["losses: fairseq imported"] = "fairseq" in sys.modules
import laser_fairseq
seen["package: logging unchanged"] = {ROOT_STATE} == before
import laser_fairseq.tasks, laser_fairseq.models, laser_fairseq.export
seen["registering modules: logging unchanged"] = {ROOT_STATE} == before
from fairseq.tasks import TASK_REGISTRY
from fairseq.criterions import CRITERION_REGISTRY
from fairseq.models import MODEL_REGISTRY
seen["registered"] = sorted(name for name, registry in
    (("task", TASK_REGISTRY), ("criterion", CRITERION_REGISTRY), ("model", MODEL_REGISTRY)) if "laser" in registry)
import numba
@numba.njit
def add(a, b):
    return a + b
add(1, 2)  # numba logs its compilation at DEBUG level
print(json.dumps(seen))
"""


@pytest.fixture(scope="module")
def plain_script():
    result = run_python(PLAIN_SCRIPT)
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_the_losses_import_without_fairseq_and_without_changing_logging(plain_script):
    seen, _ = plain_script
    assert seen["losses: logging unchanged"] and not seen["losses: fairseq imported"]


def test_the_package_and_its_fairseq_modules_leave_logging_unchanged(plain_script):
    seen, _ = plain_script
    assert seen["package: logging unchanged"] and seen["registering modules: logging unchanged"]


def test_plain_imports_register_task_criterion_and_model(plain_script):
    seen, _ = plain_script
    assert seen["registered"] == ["criterion", "model", "task"]


def test_a_numba_compile_after_the_import_prints_nothing(plain_script):
    """The symptom of the issue: numba's DEBUG compilation trace on stderr once fairseq has been imported."""
    _, stderr = plain_script
    assert "DEBUG" not in stderr and len(stderr.splitlines()) < 5, stderr[:2000]


def test_a_script_s_own_logging_setup_survives_the_fairseq_import():
    result = run_python(
        "import logging, sys\n"
        "logging.basicConfig(level=logging.ERROR, stream=sys.stdout, format='%(message)s')\n"
        f"before = {ROOT_STATE}\n"
        "import laser_fairseq.models.laser_model\n"
        f"assert {ROOT_STATE} == before, {ROOT_STATE}\n"
        "print('ok')\n"
    )
    assert result.stdout.strip() == "ok"


def test_every_module_imports_quiet_fairseq_before_fairseq():
    """Static check of every module: its first top-level fairseq import comes after the quiet import."""
    offenders = []
    for module in pkgutil.walk_packages(laser_fairseq.__path__, "laser_fairseq."):
        path = _source(module.name)
        quiet_seen = False
        for node in ast.parse(open(path).read()).body:
            if isinstance(node, ast.ImportFrom) and any(alias.name == "quiet_fairseq" for alias in node.names):
                quiet_seen = True
            elif _imports_fairseq(node) and not quiet_seen:
                offenders.append(f"{path}:{node.lineno}")
                break
    assert not offenders, f"fairseq imported before laser_fairseq.quiet_fairseq in {offenders}"


def _source(module_name: str) -> str:
    relative = module_name.split(".")[1:]
    folder = os.path.join(PACKAGE, *relative)
    return os.path.join(folder, "__init__.py") if os.path.isdir(folder) else folder + ".py"


def _imports_fairseq(node) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] in ("fairseq", "fairseq_cli") for alias in node.names)
    if isinstance(node, ast.ImportFrom) and node.level == 0:
        return (node.module or "").split(".")[0] in ("fairseq", "fairseq_cli")
    return False


def test_the_user_dir_import_registers_task_criterion_and_model():
    """What fairseq-hydra-train does with common.user_dir, in a fresh process."""
    run_python(
        "import argparse\n"
        "from fairseq import utils\n"
        "from fairseq.tasks import TASK_REGISTRY\n"
        "from fairseq.criterions import CRITERION_REGISTRY\n"
        "from fairseq.models import MODEL_REGISTRY\n"
        f"utils.import_user_module(argparse.Namespace(user_dir={PACKAGE!r}))\n"
        "missing = [name for name, registry in (('task', TASK_REGISTRY), ('criterion', CRITERION_REGISTRY),\n"
        "           ('model', MODEL_REGISTRY)) if 'laser' not in registry]\n"
        "assert not missing and 'hubert_ctc_fixed' in MODEL_REGISTRY, missing\n"
    )
