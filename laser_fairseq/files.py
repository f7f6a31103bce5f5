"""Atomic writes: a file (or directory) appears complete under its name or not at all; and a file's sha256."""

import contextlib
import hashlib
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
        _remove(temporary)


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
    """Yield a temporary directory path beside ``path``; when the block succeeds it takes the place of ``path``
    (an existing file or directory there is moved aside first and removed only once the new one is in place),
    otherwise it is removed and ``path`` stays as it was."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        yield temporary
        if os.path.lexists(path):
            aside = f"{path}.old-{os.getpid()}"
            os.rename(path, aside)
            os.rename(temporary, path)
            _remove(aside)
        else:
            os.rename(temporary, path)
    finally:
        _remove(temporary)


def _remove(path: str):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


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


def sha256_of(path: str) -> str:
    """Hex sha256 of a file's bytes, or of a directory's files (each file's path relative to the directory,
    then its bytes, in sorted path order: a Hugging Face export folder gets one digest)."""
    digest = hashlib.sha256()
    files = [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names)
    for name in files:
        if name != path:
            digest.update(os.path.relpath(name, path).encode())
        with open(name, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
