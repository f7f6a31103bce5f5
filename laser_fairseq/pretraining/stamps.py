"""Stage stamps: skip finished stages, resume interrupted ones, refuse changed settings.

Every stage writes ``<stage dir>/stamp.json`` when it starts (status ``running``) and again when it has
finished (status ``done``, with the size of every output). A stamp holds:

- ``settings``  everything of the schedule that decides the stage's outputs;
- ``inputs``    the ``run_id`` of every stage it reads (and digests of external files);
- ``run_id``    a fresh id each time the stage starts from nothing.

On a re-run, a stage is

- skipped when its stamp is ``done`` with the same settings and inputs and its outputs are intact;
- resumed (same ``run_id``) when its stamp is ``running`` with the same settings and inputs;
- redone from nothing when only its inputs changed: a stage it reads was redone, so its outputs are stale;
- refused (``StageError``) when its settings changed, unless the stage is forced (``--force-stage``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Set

from ..files import read_json, write_json

logger = logging.getLogger(__name__)

STAMP = "stamp.json"
RUNNING = "running"
DONE = "done"

SKIP = "skip"
RESUME = "resume"
RUN = "run"


class StageError(RuntimeError):
    """A stage that must not run as asked; the message names the stage and what to do."""


@dataclass
class Stage:
    name: str  # e.g. "iter2.kmeans"
    directory: str
    settings: dict  # JSON-able
    inputs: Dict[str, str]  # upstream stage name -> its run_id (or file name -> digest)

    @property
    def stamp_path(self) -> str:
        return os.path.join(self.directory, STAMP)


def read_stamp(directory: str) -> Optional[dict]:
    path = os.path.join(directory, STAMP)
    if not os.path.isfile(path):
        return None
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError) as error:
        raise StageError(f"{path}: unreadable stamp ({error}); pass --force-stage for this stage to redo it")


def run_id_of(directory: str, name: str) -> str:
    """The run_id of a finished stage (what a stage reading it records as its input)."""
    stamp = read_stamp(directory)
    if stamp is None or stamp.get("status") != DONE:
        raise StageError(f"stage {name} has not finished ({directory}); run the driver without --shard first")
    return stamp["run_id"]


class StageBook:
    """Decides, per stage, whether to skip, resume or run it, and writes the stamps."""

    def __init__(self, force: Iterable[str] = ()):
        self.force: Set[str] = set(force)
        self.started: Dict[str, float] = {}

    def begin(self, stage: Stage) -> str:
        """SKIP, RESUME or RUN; RUN leaves an empty stage directory with a ``running`` stamp."""
        stage.settings, stage.inputs = _as_json(stage.settings), _as_json(stage.inputs)
        if stage.name in self.force:
            self.force.discard(stage.name)
            logger.info("%s: forced, redoing it", stage.name)
            return self._start_fresh(stage)
        stamp = read_stamp(stage.directory)
        if stamp is None:
            leftovers = _contents(stage.directory)
            if leftovers:
                raise StageError(
                    f"{stage.name}: {stage.directory} holds files but no stamp ({', '.join(leftovers[:3])}); they "
                    f"were not written by a finished run of this stage: pass --force-stage {stage.name} to "
                    f"replace them, or choose another --out"
                )
            if self._create_stamp(stage):
                return RUN
            stamp = read_stamp(stage.directory)  # another process (a shard worker) started it just now
        changed = settings_changes(stamp.get("settings", {}), stage.settings)
        if changed:
            raise StageError(
                f"{stage.name}: its settings changed since it ran ({'; '.join(changed)}); pass --force-stage "
                f"{stage.name} to redo it and the stages after it, or use another --out"
            )
        if stamp.get("inputs") != stage.inputs:
            redone = sorted(k for k in stage.inputs if stamp.get("inputs", {}).get(k) != stage.inputs[k])
            logger.info("%s: redoing it because %s changed since it ran", stage.name, ", ".join(redone))
            return self._start_fresh(stage)
        if stamp.get("status") == DONE:
            missing = _damaged_outputs(stage.directory, stamp.get("outputs", {}))
            if missing:
                raise StageError(
                    f"{stage.name}: outputs changed since it finished ({'; '.join(missing[:3])}); pass "
                    f"--force-stage {stage.name} to redo it"
                )
            return SKIP
        self.started[stage.name] = time.monotonic()
        return RESUME

    def _start_fresh(self, stage: Stage) -> str:
        if os.path.isdir(stage.directory):
            shutil.rmtree(stage.directory)
        self._create_stamp(stage)
        return RUN

    def _create_stamp(self, stage: Stage) -> bool:
        """Write a ``running`` stamp with a new run_id unless one appeared meanwhile; True if written."""
        os.makedirs(stage.directory, exist_ok=True)
        temporary = f"{stage.stamp_path}.new-{os.getpid()}"
        write_json(temporary, _stamp(stage, RUNNING, run_id=uuid.uuid4().hex))
        try:
            os.link(temporary, stage.stamp_path)  # fails if the stamp exists: never replace another's
        except FileExistsError:
            return False
        finally:
            os.remove(temporary)
        self.started[stage.name] = time.monotonic()
        return True

    def finish(self, stage: Stage, outputs: List[str], record: Optional[dict] = None) -> dict:
        """Mark the stage done; ``outputs`` are paths relative to its directory, ``record`` extra facts."""
        previous = read_stamp(stage.directory) or {}
        seconds = time.monotonic() - self.started.pop(stage.name, time.monotonic())
        stamp = _stamp(stage, DONE, run_id=previous.get("run_id") or uuid.uuid4().hex)
        stamp["seconds"] = round(seconds, 3)  # of the attempt that completed the stage
        stamp["outputs"] = {name: os.path.getsize(os.path.join(stage.directory, name)) for name in outputs}
        stamp["record"] = record or {}
        write_json(stage.stamp_path, stamp)
        return stamp


def _stamp(stage: Stage, status: str, run_id: str) -> dict:
    return {
        "stage": stage.name,
        "status": status,
        "run_id": run_id,
        "settings": stage.settings,
        "inputs": stage.inputs,
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _as_json(value):
    """As it reads back from the stamp (tuples become lists, keys strings), so comparisons are fair."""
    return json.loads(json.dumps(value))


def _contents(directory: str) -> List[str]:
    """Files in ``directory``, without the temporary files another process may be writing right now."""
    if not os.path.isdir(directory):
        return []
    return sorted(name for name in os.listdir(directory) if ".tmp-" not in name and f"{STAMP}.new-" not in name)


def _damaged_outputs(directory: str, outputs: Dict[str, int]) -> List[str]:
    problems = []
    for name, size in outputs.items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            problems.append(f"{name} is missing")
        elif os.path.getsize(path) != size:
            problems.append(f"{name} has {os.path.getsize(path)} bytes, {size} when written")
    return problems


def settings_changes(old: dict, new: dict, prefix: str = "") -> List[str]:
    """``key: old -> new`` for every leaf that differs (nested dicts are walked)."""
    changes = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            changes += settings_changes(a, b, prefix=f"{name}.")
        elif a != b:
            changes.append(f"{name}: {a!r} -> {b!r}")
    return changes
