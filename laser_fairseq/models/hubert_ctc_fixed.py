"""``hubert_ctc_fixed``: fairseq's ``hubert_ctc`` CTC fine-tuning model, runnable with fairseq-fixed 0.12.3.1.

Use it exactly like ``hubert_ctc`` (``model.w2v_path=`` an original or exported HuBERT checkpoint); see
``examples/ctc/config/``. What stock ``hubert_ctc`` trips on: examples/ctc/README.md, "fairseq-fixed
0.12.3.1's quirks".
"""

from dataclasses import dataclass, field

import torch

from .. import quiet_fairseq  # noqa: F401  (before any fairseq import: keeps the caller's logging setup)
from fairseq.models import register_model
from fairseq.models.hubert.hubert_asr import HubertCtc, HubertCtcConfig

from ..checkpoint_io import SAFE_GLOBALS


@dataclass
class HubertCtcFixedConfig(HubertCtcConfig):
    # fairseq-fixed's HubertEncoder reads cfg.autoregressive, a key HubertCtcConfig does not declare.
    autoregressive: bool = field(default=False, metadata={"help": "always false: CTC is not autoregressive"})


@register_model("hubert_ctc_fixed", dataclass=HubertCtcFixedConfig)
class HubertCtcFixed(HubertCtc):
    """``hubert_ctc`` with the missing config key; reads ``w2v_path`` under the weights-only allow-list."""

    @classmethod
    def build_model(cls, cfg: HubertCtcFixedConfig, task):
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return super().build_model(cfg, task)
