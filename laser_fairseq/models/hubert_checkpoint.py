"""Build fairseq's ``HubertModel`` from a checkpoint without label files.

fairseq's ``hubert_pretraining`` task takes the label dictionaries from ``task_state["dictionaries"]``, or,
when a checkpoint has none (released checkpoints written before fairseq stored them there), from
``{task.label_dir}/dict.{label}.txt`` -- a path on the authors' cluster, so fairseq's own loader fails with
``FileNotFoundError`` (fairseq issues #3624, #3663, #4003). The model constructor needs the dictionaries only
for the shape of the pretraining head (``label_embs_concat``), which LASER never uses. Here they come from:

- ``task_state["dictionaries"]`` when present (fairseq's own path, unchanged);
- otherwise, with one label set, a size-only dictionary with as many entries as ``label_embs_concat`` has rows;
- no dictionaries at all when the weights have no ``label_embs_concat`` (Hugging Face checkpoints), the way
  fairseq builds a HuBERT for fine-tuning; without ``final_proj`` the pretraining modules are removed, as
  fairseq's ``hubert_ctc`` does.

The model is then loaded with a strict key check, so it holds exactly the checkpoint's tensors.
"""

import contextlib
import logging
from typing import Iterable, Optional, Sequence

import torch

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq import checkpoint_utils, tasks
from fairseq.data.dictionary import Dictionary
from omegaconf import DictConfig, OmegaConf

from ..checkpoint_io import SAFE_GLOBALS, CheckpointError, resolve_globals
from .hubert_upstream import HubertUpstream

logger = logging.getLogger(__name__)

LABEL_EMBEDDINGS = "label_embs_concat"
FINAL_PROJ = "final_proj.weight"
# prefixes of the pretraining head (depends on the label set; not part of the encoder)
PRETRAINING_HEAD = ("final_proj.", LABEL_EMBEDDINGS)


def size_only_dictionary(size: int) -> Dictionary:
    """A fairseq Dictionary of ``size`` entries (its 4 special symbols, then "0", "1", ...)."""
    dictionary = Dictionary()
    for index in range(size - len(dictionary)):
        dictionary.add_symbol(str(index))
    return dictionary


def label_dictionaries(task_state: Optional[dict], weights: dict, labels: Sequence[str], path: str) -> list:
    """The dictionaries the HubertModel constructor is given (see the module docstring)."""
    dictionaries = (task_state or {}).get("dictionaries")
    if dictionaries:
        return list(dictionaries)
    if LABEL_EMBEDDINGS not in weights:
        return [None]
    rows = int(weights[LABEL_EMBEDDINGS].shape[0])
    if len(labels) != 1 or rows < len(Dictionary()):
        raise CheckpointError(
            f"{path}: no label dictionaries in task_state and {len(labels)} label sets {list(labels)} sharing "
            f"{rows} rows of {LABEL_EMBEDDINGS}: their sizes cannot be derived from the weights. Re-save the "
            f"checkpoint with task_state['dictionaries'] (load it once with fairseq where its label files exist)"
        )
    logger.info(
        f"{path}: no label dictionaries in task_state; the unused pretraining head is sized from the checkpoint "
        f"({LABEL_EMBEDDINGS}: {rows} labels '{labels[0]}'), no label files read"
    )
    return [size_only_dictionary(rows)]


def build_hubert_upstream(cfg: DictConfig, weights: dict, dictionaries: list, path: str) -> HubertUpstream:
    """fairseq's task and model built from ``cfg`` (model / task sections), ``weights`` loaded strictly;
    waveforms normalised as ``cfg.task.normalize`` says."""
    with fairseq_errors(path):
        task = tasks.setup_task(cfg.task, from_checkpoint=True)
        task.load_state_dict({"dictionaries": dictionaries})
        model = task.build_model(cfg.model, from_checkpoint=True)
        if FINAL_PROJ not in weights:
            model.remove_pretraining_modules()
        model.load_state_dict(weights, strict=True, model_cfg=cfg.model)
    return HubertUpstream(model, normalize=bool(cfg.task.get("normalize", False)))


def fairseq_hubert_upstream(path: str, extra_safe_globals: Iterable[str] = ()) -> HubertUpstream:
    """A fairseq-format HuBERT file, read and upgraded by fairseq's own loader (legacy ``args`` become a
    ``cfg`` there, as in ``load_model_ensemble_and_task``)."""
    allowed = SAFE_GLOBALS + resolve_globals(extra_safe_globals)
    with torch.serialization.safe_globals(allowed), fairseq_errors(path):
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    cfg = state["cfg"]
    dictionaries = label_dictionaries(state.get("task_state"), state["model"], list(cfg.task.labels), path)
    return build_hubert_upstream(cfg, state["model"], dictionaries, path)


def s3prl_hubert_upstream(state: dict, path: str) -> HubertUpstream:
    """s3prl's converted format (task_cfg, model_cfg, model_weight, dictionaries_symbols)."""
    cfg = hubert_cfg(state["model_cfg"], state["task_cfg"])
    dictionaries = [size_only_dictionary(len(symbols)) for symbols in state["dictionaries_symbols"]]
    return build_hubert_upstream(cfg, state["model_weight"], dictionaries, path)


def hubert_cfg(model_cfg: dict, task_cfg: dict) -> DictConfig:
    """A fairseq cfg with the two sections a HubertModel is built from."""
    return OmegaConf.create({
        "model": dict(model_cfg, _name="hubert"),
        "task": dict(task_cfg, _name="hubert_pretraining"),
    })


@contextlib.contextmanager
def fairseq_errors(path: str):
    """fairseq's bare errors (a missing key, a shape mismatch in the strict load) named with the file."""
    try:
        yield
    except (RuntimeError, KeyError, AttributeError, AssertionError, FileNotFoundError) as error:
        raise CheckpointError(f"{path}: fairseq could not load this HuBERT checkpoint: {error}") from None
