"""The ``fairseq-hydra-train`` command line: the one builder behind every training run of the package
(the LASER effect table's runs, the HuBERT pretraining iterations, the demo).

A command is ``[fairseq-hydra-train, --config-dir, DIR, --config-name, NAME, common.user_dir=<this package>,
key=value..., extra...]``: the keyed overrides in the order given, each value written in hydra's override
grammar (``hydra_value``), then ``extra`` overrides that are already ``key=value`` strings, applied last.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, List, Mapping, Sequence

USER_DIR = os.path.dirname(os.path.abspath(__file__))  # .../laser_fairseq, fairseq's common.user_dir
_PLAIN = re.compile(r"^[A-Za-z0-9_./:-]+$")  # strings hydra reads back unchanged without quotes


class Verbatim(str):
    """A value already written in hydra's override grammar (e.g. ``"[5e-05]"``), passed on unchanged."""


def fairseq_hydra_train() -> str:
    """The ``fairseq-hydra-train`` executable of this interpreter's environment."""
    return os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train")


def hydra_value(value: Any) -> str:
    """A value in hydra's override grammar: lists as [a,b], bools as true/false, null, quoted odd strings."""
    if isinstance(value, Verbatim):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(item) for item in value) + "]"
    if _PLAIN.match(value):
        return value
    # in a quoted hydra string only backslashes before a quote (or before the closing quote) are escapes
    escaped = re.sub(r"(\\*)'", lambda match: match.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda match: match.group(1) * 2, escaped)
    return "'" + escaped + "'"


def override_arguments(overrides: Mapping[str, Any]) -> List[str]:
    """``key=value`` command-line overrides, in the mapping's order."""
    return [f"{name}={hydra_value(value)}" for name, value in overrides.items()]


def run_folder_overrides(run_dir: str) -> dict:
    """Where a run writes: ``run_dir``/checkpoints, ``run_dir``/tensorboard and ``run_dir``/hydra."""
    return {
        "checkpoint.save_dir": os.path.join(run_dir, "checkpoints"),
        "common.tensorboard_logdir": os.path.join(run_dir, "tensorboard"),
        "hydra.run.dir": os.path.join(run_dir, "hydra"),
    }


def hydra_train_command(
    config_dir: str, config_name: str, overrides: Mapping[str, Any], extra: Sequence[str] = ()
) -> List[str]:
    """The argv of ``fairseq-hydra-train`` with the config ``config_dir/config_name.yaml`` and this package as
    user dir; ``overrides`` values are written by ``hydra_value``, ``extra`` are ``key=value`` strings."""
    return [
        fairseq_hydra_train(), "--config-dir", config_dir, "--config-name", config_name,
        f"common.user_dir={USER_DIR}", *override_arguments(overrides), *extra,
    ]
