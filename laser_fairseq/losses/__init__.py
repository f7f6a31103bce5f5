"""Losses of LASER fine-tuning: soft-DTW (divergence) and its building blocks.

One import line per loss module; add new ones below.
"""

from laser_fairseq.losses.contrastive_idm import contrastive_idm
from laser_fairseq.losses.pairwise import squared_distances
from laser_fairseq.losses.soft_dtw import soft_dtw, soft_dtw_divergence

__all__ = [_name for _name, _obj in list(globals().items())
           if not _name.startswith("_") and callable(_obj)]
