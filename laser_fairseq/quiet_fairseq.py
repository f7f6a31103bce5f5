"""fairseq, imported without changing the caller's logging setup.

``import fairseq`` runs ``logging.basicConfig(level=logging.DEBUG)`` at module level (in
fairseq/models/wav2vec/wav2vec2_classification.py, reached from fairseq/__init__.py): the root logger of a
plain script gets a stderr handler and the DEBUG level, and every library logging at DEBUG afterwards
floods the terminal (numba prints whole compilation traces). fairseq/tasks/text_to_speech.py and
frm_text_to_speech.py call ``basicConfig`` as well, which does nothing once a handler exists.

Every module of this package that uses fairseq imports this module before its first ``fairseq`` import:
fairseq is imported here, once, and the root logger's level and handlers are put back as they were. In
``fairseq-hydra-train`` fairseq is imported before the user-dir and hydra / fairseq_cli configure logging
themselves, so nothing changes there.
"""

import logging


def import_fairseq_keeping_logging() -> None:
    """``import fairseq``, then restore the root logger's level and handlers."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        import fairseq  # noqa: F401
    finally:
        root.setLevel(level)
        root.handlers[:] = handlers


import_fairseq_keeping_logging()
