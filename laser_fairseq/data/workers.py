"""Worker processes for the corpus tools (manifest checks, synthesis)."""

import multiprocessing
from multiprocessing.context import BaseContext


def clean_worker_context(module: str) -> BaseContext:
    """A multiprocessing context whose workers fork from a clean server process that has imported ``module``.

    A plain fork copies the caller's state, locks and thread pools included: a test process that had already
    run torch hung now and then when it built a corpus with 2 forked workers. The server starts once per
    process (about 2 s: it imports ``module``); its workers start in milliseconds.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([module])
    return context
