"""Progress lines of the front doors on stderr: rewritten in place on a terminal, every ~10 % otherwise."""

import sys
import time


class StderrProgress:
    """A ``progress(stage, done, total)`` callback that prints ``[label] stage: done/total (elapsed s)``."""

    def __init__(self, label: str):
        self.label = label
        self.interactive = sys.stderr.isatty()
        self.started = time.monotonic()

    def __call__(self, stage: str, done: int, total: int):
        step = max(1, -(-total // 10))
        if not self.interactive and done != total and done % step:
            return
        elapsed = time.monotonic() - self.started
        line = f"[{self.label}] {stage}: {done}/{total} ({elapsed:.0f} s)"
        if self.interactive:
            sys.stderr.write("\r" + line + ("\n" if done == total else ""))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
