"""The upstream of any checkpoint this project loads or exports, as an s3prl ``S3PRLUpstream``.

- fairseq HuBERT (``hubert_base_ls960.pt``, the committed tiny HuBERT, exports): s3prl's own ``hubert_local``
  with ``fairseq=True``. s3prl converts the file into ``<stem>.converted.pt`` *beside* it, so it is given a
  copy in ``work_dir`` and the source folder is never written to;
- s3prl's converted HuBERT format: ``hubert_local`` as is;
- unilm WavLM (``WavLM-Base.pt``): s3prl's own ``wavlm_local``;
- a LASER training checkpoint or a Hugging Face directory: ``ProjectUpstreamExpert``, a small upstream of
  ours over :func:`laser_fairseq.models.trained_upstream.open_upstream` (the same hidden states: input of
  every block plus the final output, 320 samples per frame).

Files that none of these can load stop with a :class:`~laser_fairseq.checkpoint_io.CheckpointError` that names
the file and what to pass instead.
"""

import os
import shutil
from typing import List

import torch
import torch.nn as nn

from ..checkpoint_io import CheckpointError, load_checkpoint
from ..data.frames import FRAME_HOP
from ..files import sha256_of
from ..models import upstream as upstream_formats
from ..models.trained_upstream import is_laser_checkpoint, open_upstream
from .s3prl_compat import s3prl_environment

S3PRL_HUBERT = "s3prl_hubert"
S3PRL_WAVLM = "s3prl_wavlm"
OURS = "laser_fairseq"


def upstream_route(path: str) -> str:
    """Which upstream serves ``path``: S3PRL_HUBERT / S3PRL_WAVLM / OURS (a clear error for anything else)."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such file or directory; pass an upstream checkpoint (--upstream)")
    if os.path.isdir(path):
        upstream_formats.read_upstream_source(path)  # a clear error if it is not an HF HuBERT / WavLM directory
        return OURS
    state = load_checkpoint(path)
    if is_laser_checkpoint(state):
        return OURS
    kind, fmt = upstream_formats.detect_format(state, path)
    if fmt == upstream_formats.UNILM:
        return S3PRL_WAVLM
    if fmt == upstream_formats.S3PRL:
        return S3PRL_HUBERT
    if fmt == upstream_formats.FAIRSEQ and kind == upstream_formats.HUBERT:
        if state.get("task_state", {}).get("dictionaries"):
            return S3PRL_HUBERT
        return OURS  # s3prl's conversion needs the label dictionaries; ours does not
    return OURS


class ProjectUpstreamExpert(nn.Module):
    """s3prl's upstream interface (list of waveforms -> ``{"hidden_states": [...]}``) over our upstreams."""

    def __init__(self, path: str):
        super().__init__()
        self.model = open_upstream(path).upstream.eval()

    def get_downsample_rates(self, key: str) -> int:
        return FRAME_HOP  # samples per frame

    def forward(self, wavs: List[torch.Tensor]):
        lengths = torch.tensor([len(wav) for wav in wavs], device=wavs[0].device)
        padded = nn.utils.rnn.pad_sequence(wavs, batch_first=True)
        padding_mask = torch.arange(padded.size(1), device=padded.device)[None] >= lengths[:, None]
        states = self.model.hidden_states(padded, padding_mask if bool(padding_mask.any()) else None)
        return {"hidden_states": states}


def build_expert(path: str, work_dir: str) -> nn.Module:
    """The s3prl-interface upstream module of ``path`` (see the module docstring)."""
    route = upstream_route(path)
    if route == OURS:
        return ProjectUpstreamExpert(path)
    converted = route == S3PRL_HUBERT and "model_weight" in load_checkpoint(path)
    # every project load above is done before s3prl's: torch's safe_globals contexts do not nest (leaving an
    # inner one removes the globals an outer one allowed)
    with s3prl_environment():
        if route == S3PRL_WAVLM:
            from s3prl.upstream.wavlm.hubconf import wavlm_local

            return wavlm_local(ckpt=path)
        from s3prl.upstream.hubert.hubconf import hubert_local

        if converted:
            return hubert_local(ckpt=path)
        os.makedirs(work_dir, exist_ok=True)
        copy = os.path.join(work_dir, "upstream.pt")
        if not os.path.isfile(copy) or sha256_of(copy) != sha256_of(path):
            shutil.copyfile(path, copy)
            stale = os.path.join(work_dir, "upstream.converted.pt")
            if os.path.exists(stale):
                os.remove(stale)
        return hubert_local(ckpt=copy, fairseq=True)


def _s3prl_upstream_base():
    with s3prl_environment():
        from s3prl.nn.upstream import S3PRLUpstream
    return S3PRLUpstream


def project_upstream(path: str, work_dir: str, normalize: bool = False):
    """An ``S3PRLUpstream`` (s3prl's class: hidden states padded / trimmed to the frame count, lengths) whose
    ``upstream`` is :func:`build_expert` of ``path``."""
    base = _s3prl_upstream_base()
    module = base.__new__(base)
    nn.Module.__init__(module)
    module.upstream = build_expert(path, work_dir)
    module.normalize = normalize
    from s3prl.util.pseudo_data import get_pseudo_wavs

    module.upstream.eval()
    with torch.no_grad():
        states = module.upstream(get_pseudo_wavs())["hidden_states"]
    module.upstream.train()
    module._num_layers = len(states)
    module._hidden_sizes = [state.size(-1) for state in states]
    rates = module.upstream.get_downsample_rates("hidden_states")
    module._downsample_rates = [rates] * len(states) if isinstance(rates, int) else list(rates)
    return module
