"""Atomic writes: a file appears complete under its name or not at all."""

import contextlib
import json
import os
import shutil
from typing import Dict, Iterator, List


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside ``path``; renamed into place when the block succeeds, removed otherwise.

    The block may write a file or a directory there (a directory replaces only a missing or empty ``path``).
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if os.path.isdir(temporary):
            shutil.rmtree(temporary)
        elif os.path.exists(temporary):
            os.remove(temporary)


def write_text(path: str, text: str):
    with atomic_path(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())


def write_texts(texts: Dict[str, str]) -> List[str]:
    """Write every ``{path: text}`` to a temporary file beside its path, then rename them all into place: a
    failure while writing leaves every target as it was. Returns the paths, in order."""
    temporary = {}
    try:
        for path, text in texts.items():
            temporary[path] = f"{path}.tmp-{os.getpid()}"
            with open(temporary[path], "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        for written in temporary.values():
            if os.path.exists(written):
                os.remove(written)
        raise
    for path, written in temporary.items():
        os.replace(written, path)
    return list(temporary)


def write_json(path: str, value, sort_keys: bool = False) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=sort_keys) + "\n")


def read_json(path: str):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)
