"""Resume from the newest intact checkpoint when a kill tore ``checkpoint_last.pt``.

fairseq writes the first file of a save atomically (``checkpoint_E_U.pt`` through a ``.tmp`` file and a
rename) but makes ``checkpoint_best.pt`` and ``checkpoint_last.pt`` with a plain file copy; a kill, OOM or
pre-emption during that copy leaves a truncated ``checkpoint_last.pt`` and the next launch dies reading it.
The copy itself cannot be made atomic from a user-dir: ``fairseq_cli.train`` calls
``checkpoint_utils.save_checkpoint`` directly and no registry or hook covers it, so only monkey-patching
fairseq (which this project does not do) could change it. Instead, ``ensure_resumable(save_dir)`` runs
before fairseq looks for ``checkpoint_last.pt`` (the ``laser`` task calls it at setup; a driver of other
fairseq tasks calls it before each launch) and puts the newest intact checkpoint there.

Nothing is deleted: a torn or superseded ``checkpoint_last.pt`` is kept under a new name, with a warning
naming both files. "Intact" means a complete zip archive (a torn copy lacks the central directory at its
end) that torch's weights-only reader opens, holding a fairseq training state (model, optimizer history,
train iterator position); the tensor bytes are mapped, not read, so the check costs little.
"""

import logging
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import torch

from .checkpoint_io import SAFE_GLOBALS, CheckpointError, load_checkpoint, resolve_globals
from .files import atomic_path

logger = logging.getLogger(__name__)

LAST = "checkpoint_last.pt"
_CHECKPOINT_NAME = re.compile(r"checkpoint.*\.pt")  # fairseq's names: checkpointE, checkpoint_E_U, _best, _last


@dataclass
class ResumePoint:
    """The checkpoint fairseq will resume from: ``path`` is save_dir/checkpoint_last.pt; ``restored_from`` is
    the intact checkpoint copied there by ``ensure_resumable`` (None when checkpoint_last.pt was used as is)."""

    path: str
    epoch: int
    num_updates: int
    restored_from: Optional[str] = None


def ensure_resumable(save_dir: str, extra_safe_globals: Iterable[str] = ()) -> Optional[ResumePoint]:
    """Make ``save_dir/checkpoint_last.pt`` the newest intact checkpoint of ``save_dir``.

    - no checkpoint_last.pt: None, nothing changed (fairseq starts from scratch; a warning if the folder
      holds other checkpoints, since fairseq will then overwrite them);
    - checkpoint_last.pt intact and no newer intact checkpoint beside it: its ResumePoint, nothing changed;
    - checkpoint_last.pt torn, or older than an intact checkpoint saved after it (a kill between a save's
      atomic write and its copy): the newest intact checkpoint (by modification time) is copied over it
      atomically; the old file is kept as ``checkpoint_last.pt.torn-<time>`` / ``.older-<time>``;
    - torn files newer than the checkpoint resumed from (e.g. a checkpoint_best.pt whose copy was killed)
      are moved aside as ``<name>.torn-<time>``.

    Raises CheckpointError, changing nothing, when checkpoint_last.pt is torn and no intact checkpoint is
    left, or when a file is unreadable for another reason than a torn copy (e.g. a class outside the
    allow-list).
    """
    last = os.path.join(save_dir, LAST)
    _warn_about_unfinished_writes(save_dir)
    others = _other_checkpoints(save_dir)
    if not os.path.isfile(last):
        if others:
            logger.warning(
                f"{save_dir} holds {len(others)} checkpoint(s) (newest: {os.path.basename(others[0])}) but no "
                f"{LAST}: fairseq starts from scratch and will overwrite them. To resume instead, copy the "
                f"checkpoint to resume from to {last}"
            )
        return None
    last_state = _read_state(last, extra_safe_globals)
    if last_state is not None:
        newer = [path for path in others if os.path.getmtime(path) > os.path.getmtime(last)]
        found, torn = _newest_intact(newer, extra_safe_globals)
        _set_aside(torn)
        if found is None or _updates(found[1]) <= _updates(last_state):
            return _resume_point(last, last_state)
        return _restore(last, "older", *found)
    found, torn = _newest_intact(others, extra_safe_globals)
    if found is None:
        raise CheckpointError(
            f"{last} is a torn copy (an interrupted save) and {save_dir} holds no intact checkpoint to resume "
            f"from{_listing(torn)}. To start from scratch, move {last} (and any other torn file) out of "
            f"{save_dir}; to resume from a copy kept elsewhere, set checkpoint.restore_file=/path/to/it"
        )
    _set_aside(torn)
    return _restore(last, "torn", *found)


def _other_checkpoints(save_dir: str) -> List[str]:
    """Checkpoint files of ``save_dir`` except checkpoint_last.pt, newest (modification time) first."""
    if not os.path.isdir(save_dir):
        return []
    paths = [
        os.path.join(save_dir, name) for name in os.listdir(save_dir)
        if name != LAST and _CHECKPOINT_NAME.fullmatch(name) and os.path.isfile(os.path.join(save_dir, name))
    ]
    return sorted(paths, key=os.path.getmtime, reverse=True)


def _newest_intact(paths: List[str], extra_safe_globals) -> Tuple[Optional[Tuple[str, dict]], List[str]]:
    """((path, state) of the first intact checkpoint of ``paths`` or None, [torn files met before it])."""
    torn = []
    for path in paths:
        state = _read_state(path, extra_safe_globals)
        if state is not None:
            return (path, state), torn
        torn.append(path)
    return None, torn


def _listing(torn: List[str]) -> str:
    return f" (torn as well: {', '.join(os.path.basename(path) for path in torn)})" if torn else ""


def _read_state(path: str, extra_safe_globals) -> Optional[dict]:
    """The training state of an intact checkpoint (tensors memory-mapped); None for a torn file.

    A complete archive that still cannot be used raises CheckpointError: it is not a torn copy, and
    moving it aside would hide a problem the user has to solve.
    """
    if _is_torn(path):
        return None
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS + resolve_globals(extra_safe_globals)):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (load_checkpoint reads it again and explains what is wrong)
        state = load_checkpoint(path, extra_safe_globals)
    try:
        _updates(state), _epoch(state)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise CheckpointError(
            f"{path}: not a fairseq training checkpoint (no optimizer_history / extra_state.train_iterator); "
            f"move it out of the checkpoint folder"
        ) from None
    return state


def _is_torn(path: str) -> bool:
    """True for an empty file or an incomplete zip archive (what an interrupted copy leaves)."""
    size = os.path.getsize(path)
    if size == 0:
        return True
    try:
        with zipfile.ZipFile(path) as archive:
            return any(info.header_offset + info.compress_size > size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return True


def _updates(state: dict) -> int:
    return int(state["optimizer_history"][-1]["num_updates"])


def _epoch(state: dict) -> int:
    return int(state["extra_state"]["train_iterator"]["epoch"])


def _resume_point(path: str, state: dict, restored_from: Optional[str] = None) -> ResumePoint:
    return ResumePoint(path, _epoch(state), _updates(state), restored_from)


def _restore(last: str, why: str, source: str, state: dict) -> ResumePoint:
    """Copy ``source`` over checkpoint_last.pt atomically, keeping the old file as checkpoint_last.pt.<why>-<time>."""
    with atomic_path(last) as temporary:
        with open(source, "rb") as reader, open(temporary, "wb") as writer:
            shutil.copyfileobj(reader, writer, 16 << 20)
            writer.flush()
            os.fsync(writer.fileno())
        aside = _aside_name(last, why)
        try:
            os.link(last, aside)  # the old file under a new name, then the swap: never a moment without last
        except OSError:  # a file system without hard links
            shutil.copyfile(last, aside)
    point = _resume_point(last, state, restored_from=source)
    what = "is a torn copy (an interrupted save)" if why == "torn" else "is older than a checkpoint saved after it"
    logger.warning(
        f"{last} {what}; kept it as {aside} and resuming from {source} (epoch {point.epoch} @ "
        f"{point.num_updates} updates), copied to {last}"
    )
    return point


def _set_aside(torn: List[str]) -> None:
    """Move torn files (e.g. a checkpoint_best.pt whose copy was killed) out of fairseq's way."""
    for path in torn:
        aside = _aside_name(path, "torn")
        os.replace(path, aside)
        logger.warning(f"{path} is a torn copy (an interrupted save): moved it to {aside}")


def _aside_name(path: str, why: str) -> str:
    """``path.<why>-<YYYYmmdd-HHMMSS>``, numbered if taken; fairseq's checkpoint patterns never match it."""
    base = f"{path}.{why}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, number = base, 1
    while os.path.lexists(candidate):
        candidate, number = f"{base}.{number}", number + 1
    return candidate


def _warn_about_unfinished_writes(save_dir: str) -> None:
    if not os.path.isdir(save_dir):
        return
    for name in sorted(os.listdir(save_dir)):
        if name.endswith(".pt.tmp") or ".pt.tmp-" in name:  # fairseq's, and ours (files.atomic_path)
            logger.warning(
                f"{os.path.join(save_dir, name)} is an unfinished write of an interrupted save; it is never "
                f"read and can be deleted"
            )
