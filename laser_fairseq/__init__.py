"""laser-fairseq: LASER self-supervised fine-tuning of HuBERT / WavLM as a fairseq user-dir.

Importing the package registers the ``laser`` task, criterion and model with fairseq
(``common.user_dir=/path/to/laser_fairseq`` does this for fairseq-hydra-train).
"""

from . import criterions, models, tasks  # noqa: F401  (registration side effects)

__version__ = "0.1.0"
