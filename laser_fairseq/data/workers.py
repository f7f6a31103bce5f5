"""Worker processes for the corpus tools (manifest checks, synthesis)."""

import multiprocessing
from multiprocessing.context import BaseContext


def clean_worker_context(module: str) -> BaseContext:
    """A multiprocessing context whose workers fork from a clean server process that has imported ``module``.

    A plain fork copies the caller's state, and a caller that already ran torch can deadlock in the inherited
    OpenMP thread pool (seen here: a test suite building a corpus with 2 workers after other tests hung now and
    then). The server starts once per process; its workers start in milliseconds.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([module])
    return context
