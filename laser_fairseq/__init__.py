"""laser-fairseq: LASER self-supervised fine-tuning of HuBERT / WavLM as a fairseq user-dir.

The package itself imports nothing: ``laser_fairseq.losses`` (a torch / numba library) and the data
modules load without fairseq, and no import changes the caller's logging setup (``quiet_fairseq``).

The ``laser`` task, criterion and model register with fairseq when their modules are imported:
``fairseq-hydra-train common.user_dir=/path/to/laser_fairseq`` imports every module under ``tasks/`` and
``models/`` (the task package brings the criterion); in Python, ``import laser_fairseq.tasks,
laser_fairseq.models`` does the same.
"""

__version__ = "0.1.0"
