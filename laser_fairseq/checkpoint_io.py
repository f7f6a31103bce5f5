"""Loading checkpoints with torch's weights-only safety kept on.

fairseq checkpoints pickle a few harmless classes (fairseq's Dictionary, argparse.Namespace for legacy
``args``). They are allowed explicitly, for the duration of one load only; anything else the file asks
for is refused with the blocked name and how to proceed for a file the user trusts.
"""

import argparse
import importlib
import os
import pickle
import zipfile
from typing import Any, Iterable, List

import torch
from fairseq.data.dictionary import Dictionary

SAFE_GLOBALS: List[Any] = [Dictionary, argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def resolve_globals(names: Iterable[str]) -> List[Any]:
    """Import the classes named ``module.Class`` so they can be allow-listed."""
    resolved = []
    for name in names:
        module_name, _, attribute = name.rpartition(".")
        try:
            resolved.append(getattr(importlib.import_module(module_name), attribute))
        except (ImportError, AttributeError, ValueError):
            raise CheckpointError(f"cannot import {name!r} named in extra_safe_globals") from None
    return resolved


def load_checkpoint(path: str, extra_safe_globals: Iterable[str] = ()) -> dict:
    """``torch.load(path, weights_only=True)`` on CPU with the fairseq allow-list; clear errors.

    Files in torch's zip format are memory-mapped: tensors are read from disk only when used.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: checkpoint file not found")
    allowed = SAFE_GLOBALS + resolve_globals(extra_safe_globals)
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise CheckpointError(_explain_unpickling_error(path, error)) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt?): {str(error)[:300]}"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, found {type(state).__name__}")
    return state


def _explain_unpickling_error(path: str, error: Exception) -> str:
    message = str(error)
    blocked = _blocked_global(message)
    if blocked is None:
        return f"{path}: not a torch checkpoint, or a corrupt one ({message.splitlines()[0][:200]})"
    return (
        f"{path}: the checkpoint pickles {blocked}, which is not on laser-fairseq's allow-list for "
        f"weights-only loading. If you trust this file, allow that class for this load only with "
        f"model.extra_safe_globals=[{blocked}] (or --extra-safe-globals {blocked} in the scripts)."
    )


def _blocked_global(message: str):
    marker = "Unsupported global: GLOBAL "
    if marker not in message:
        return None
    return message.split(marker, 1)[1].split()[0].strip().rstrip(".")
