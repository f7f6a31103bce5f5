"""Losses of LASER fine-tuning: the soft-DTW divergence and Contrastive-IDM, with their building blocks."""

from laser_fairseq.losses.contrastive_idm import contrastive_idm
from laser_fairseq.losses.pairwise import squared_distances
from laser_fairseq.losses.soft_dtw import soft_dtw, soft_dtw_divergence

__all__ = ["contrastive_idm", "soft_dtw", "soft_dtw_divergence", "squared_distances"]
