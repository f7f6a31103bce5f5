"""Result files of the benchmark scripts: the numbers measured plus the command, date, machine, load and versions.

``benchmarks/soft_dtw.py``, ``benchmarks/training_step.py`` and ``benchmarks/phone_probe.py`` write one
JSON file each into the folder given by ``--out`` (``make bench`` passes the committed ``benchmarks/results``;
without ``--out`` nothing is written). The speed and memory numbers quoted in README.md and docs/ are read
from those files, and ``tests/test_bench_numbers.py`` checks that the quoted numbers equal the files'.

    record = Recorder("soft_dtw", args)      # load average, date and command at the start
    ...                                      # measure
    record.write(args.out, results)          # load average at the end; <out>/soft_dtw.json
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import Any, Optional

from .checkout import REPO

COMMITTED_FOLDER = os.path.join(REPO, "benchmarks", "results")
PACKAGES = ("torch", "torchaudio", "numpy", "numba", "triton", "fairseq-fixed", "fairseq", "pysdtw", "tslearn")


def load_average() -> list:
    """The 1, 5 and 15 minute load averages, rounded to 2 decimals."""
    return [round(value, 2) for value in os.getloadavg()]


def machine() -> dict:
    """CPU model, logical cores, RAM (GB) and OS of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gb = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    ram_gb = round(int(line.split()[1]) / 2**20, 1)
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": ram_gb, "os": platform.platform(), "gpu": gpu_name()}


def gpu_name() -> Optional[str]:
    """The CUDA device's name when torch is imported and sees one, else None (never imports torch itself)."""
    torch = sys.modules.get("torch")
    try:
        return torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
    except Exception:  # noqa: BLE001 - a broken driver must not stop a benchmark from recording
        return None


def versions() -> dict:
    """Python, the installed versions of the packages that matter, and this package's git commit."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    found["laser_fairseq"] = git_commit()
    return found


def git_commit() -> Optional[str]:
    """HEAD of this checkout, with ``+dirty`` when tracked files outside benchmarks/ are modified."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                 ":(exclude)benchmarks"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if status else "")


class Recorder:
    """Collects the context of one benchmark run; ``write`` adds the results and saves ``<out>/<name>.json``."""

    def __init__(self, name: str, args: Any, argv: Optional[list] = None):
        self.name = name
        self.settings = {key: value for key, value in vars(args).items() if key != "out"}
        script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO) if argv is None else argv[0]
        arguments = sys.argv[1:] if argv is None else argv[1:]
        self.command = " ".join(["python", script, *arguments])
        self.started = datetime.datetime.now(datetime.timezone.utc)
        self.load_before = load_average()
        self.versions = versions()  # at the start: the code that ran, even if commits follow during the run

    def record(self, results: dict) -> dict:
        finished = datetime.datetime.now(datetime.timezone.utc)
        return {
            "name": self.name,
            "command": self.command,
            "date": self.started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "wall_s": round((finished - self.started).total_seconds(), 1),
            "machine": machine(),
            "load_average": {"before": self.load_before, "after": load_average(),
                             "note": "1, 5 and 15 minute load averages of the machine (os.getloadavg)"},
            "versions": self.versions,
            "settings": self.settings,
            "results": results,
        }

    def write(self, out: Optional[str], results: dict) -> Optional[str]:
        """Save the record as ``<out>/<name>.json`` (nothing when ``out`` is None); the path written."""
        if out is None:
            return None
        os.makedirs(out, exist_ok=True)
        path = os.path.join(out, f"{self.name}.json")
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.record(results), handle, indent=1, sort_keys=False)
            handle.write("\n")
        print(f"results written to {path}")
        return path


def read(name: str, folder: str = COMMITTED_FOLDER) -> dict:
    """The record ``<folder>/<name>.json``."""
    with open(os.path.join(folder, f"{name}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def lookup(record: dict, path: str) -> Any:
    """``record`` at a dotted key path; list items by index or by their ``name`` field (``rows[ours (numba)]``)."""
    value = record
    for part in split_path(path):
        if isinstance(value, list):
            if part.isdigit():
                value = value[int(part)]
            else:
                matches = [item for item in value if isinstance(item, dict) and item.get("name") == part]
                if len(matches) != 1:
                    raise KeyError(f"{path}: {len(matches)} items named {part!r}")
                value = matches[0]
        else:
            value = value[part]
    return value


def split_path(path: str) -> list:
    """``a.b[name with . dots].c`` -> ['a', 'b', 'name with . dots', 'c']."""
    parts, current, depth = [], "", 0
    for char in path:
        if char == "[" and depth == 0:
            if current:
                parts.append(current)
            current, depth = "", 1
        elif char == "]" and depth == 1:
            parts.append(current)
            current, depth = "", 0
        elif char == "." and depth == 0:
            if current:
                parts.append(current)
            current = ""
        else:
            current += char
    if current:
        parts.append(current)
    return parts
