"""``hubert_resumable``: fairseq's HuBERT pretraining model with reproducible masks.

fairseq-fixed's ``HubertModel.apply_mask`` calls ``compute_mask_indices`` without a seed, which then draws
every mask from ``np.random.default_rng(None)`` -- fresh OS entropy -- and its layer drop uses numpy's global
RNG, seeded once per process: two runs with the same seed differ, and a run resumed from
checkpoint_last.pt differs from an uninterrupted one. This variant seeds both from torch's RNG, which
fairseq's trainer reseeds with ``seed + num_updates`` before every update, so the masks and layer drops are a
function of (seed, update, row). Architecture, weights and loss are fairseq's; the pretraining driver
writes its final checkpoints with the model name ``hubert``.
"""

from dataclasses import dataclass

import numpy as np
import torch

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq.data.data_utils import compute_mask_indices
from fairseq.data.dictionary import Dictionary
from fairseq.models import register_model
from fairseq.models.hubert import HubertConfig, HubertModel

SEED_RANGE = 2**31 - 1


@dataclass
class HubertResumableConfig(HubertConfig):
    pass


@register_model("hubert_resumable", dataclass=HubertResumableConfig)
class HubertResumableModel(HubertModel):
    """fairseq's ``HubertModel`` with seeded masks and layer drops (see the module docstring).

    fairseq's trainer reads checkpoint_last.pt (or ``checkpoint.finetune_from_model``) with torch's default
    weights-only loader right after it built the model, and hubert_pretraining checkpoints pickle the label
    ``Dictionary``. That load happens inside fairseq, out of reach of a ``with`` block, so the model holds a
    ``torch.serialization.safe_globals([Dictionary])`` scope from ``build_model`` until the loaded state reaches
    it (``load_state_dict``) or, when there is nothing to load, until its first ``forward``: fairseq's checkpoint
    load is the only load in that span, and the process-wide allow-list is as it was afterwards.
    """

    # A registered variant rather than a patch of fairseq: only runs that ask for it change how masks are drawn.

    @classmethod
    def build_model(cls, cfg: HubertResumableConfig, task):
        model = cls(cfg, task.cfg, task.dictionaries)
        model._allow_dictionary_until_loaded()
        return model

    def _allow_dictionary_until_loaded(self) -> None:
        """Enter the allow-list scope of fairseq's checkpoint load (none when Dictionary is allowed already)."""
        self._checkpoint_allow_list = None
        if Dictionary not in torch.serialization.get_safe_globals():
            self._checkpoint_allow_list = torch.serialization.safe_globals([Dictionary])
            self._checkpoint_allow_list.__enter__()

    def _end_checkpoint_allow_list(self) -> None:
        scope, self._checkpoint_allow_list = getattr(self, "_checkpoint_allow_list", None), None
        if scope is not None:
            scope.__exit__(None, None, None)

    def load_state_dict(self, state_dict, strict=True, model_cfg=None, args=None):
        self._end_checkpoint_allow_list()
        return super().load_state_dict(state_dict, strict=strict, model_cfg=model_cfg, args=args)

    def forward(self, *args, **kwargs):
        self._end_checkpoint_allow_list()
        return super().forward(*args, **kwargs)

    def apply_mask(self, x, padding_mask, target_list):
        """HubertModel.apply_mask with seeded draws; x (B, T, C), padding_mask (B, T) -> (x, mask (B, T))."""
        seed = int(torch.randint(0, SEED_RANGE, (1,)).item())
        np.random.seed(seed)  # the encoder's layer drop draws from numpy's global RNG
        B, T, C = x.shape
        rows = torch.arange(B)
        mask_indices = None
        if self.mask_prob > 0:
            mask = compute_mask_indices(
                (B, T), padding_mask, self.mask_prob, self.mask_length, self.mask_selection, self.mask_other,
                min_masks=2, no_overlap=self.no_mask_overlap, min_space=self.mask_min_space,
                seed=seed, epoch=0, indices=rows,
            )
            mask_indices = torch.from_numpy(mask).to(x.device)
            x[mask_indices] = self.mask_emb
        if self.mask_channel_prob > 0:
            channels = compute_mask_indices(
                (B, C), None, self.mask_channel_prob, self.mask_channel_length, self.mask_channel_selection,
                self.mask_channel_other, no_overlap=self.no_mask_channel_overlap,
                min_space=self.mask_channel_min_space, seed=seed, epoch=1, indices=rows,
            )
            x[torch.from_numpy(channels).to(x.device).unsqueeze(1).expand(-1, T, -1)] = 0
        return x, mask_indices
