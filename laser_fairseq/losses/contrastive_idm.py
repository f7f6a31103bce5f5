"""Contrastive inverse difference moment (Contrastive-IDM), the temporal regulariser of LASER.

For one sequence Z of n frames, with d_ij = ||z_i - z_j|| and w_ij = 1 + (i - j)^2:

    IDM(Z) = 1/n^2 * sum_ij [ far_ij * w_ij * max(0, margin - d_ij) + (1 - far_ij) * d_ij / w_ij ]

where far_ij = 1 when |i - j| > sigma. Frames far apart in time are pushed at least `margin` apart (more
strongly the further apart they are); frames close in time are pulled together. With sigma = 0 the "near"
term only touches i = j, where d = 0: the regulariser is then a time-weighted push-apart of all frames.
"""

from typing import Optional

import torch
from torch import Tensor

from .pairwise import squared_distances


def contrastive_idm(
    z: Tensor,
    lengths: Optional[Tensor] = None,
    sigma: float = 0.0,
    margin: float = 1.1,
) -> Tensor:
    """Contrastive-IDM of each sequence of a padded batch.

    Args:
        z: (B, T, D) frame embeddings; frames at and past ``lengths[b]`` are padding and ignored exactly.
        lengths: (B,) number of valid frames per sequence, or None when no frame is padded.
        sigma: frames with |i - j| <= sigma count as temporal neighbours.
        margin: distance below which frames that are not neighbours are penalised.

    Returns:
        (B,) the regulariser per sequence, normalised by its own n^2.
    """
    if z.dim() != 3:
        raise ValueError(f"contrastive_idm: z must be (B, T, D), got shape {tuple(z.shape)}")
    batch, frames, _ = z.shape
    lengths = _checked_lengths(lengths, batch, frames, z.device)

    compute_dtype = torch.float32 if z.dtype in (torch.float16, torch.bfloat16) else z.dtype
    z = z.to(compute_dtype)
    distances = _euclidean_distances(z)

    index = torch.arange(frames, device=z.device)
    gap = (index[:, None] - index[None, :]).to(compute_dtype)
    weight = 1.0 + gap.square()
    far = gap.abs() > sigma
    per_pair = torch.where(
        far,
        weight * torch.clamp(margin - distances, min=0.0),
        distances / weight,
    )

    valid = index[None, :] < lengths[:, None]  # (B, T)
    valid_pairs = valid[:, :, None] & valid[:, None, :]
    total = torch.where(valid_pairs, per_pair, torch.zeros_like(per_pair)).sum(dim=(1, 2))
    return total / lengths.to(compute_dtype).square()


def _euclidean_distances(z: Tensor) -> Tensor:
    """(B, T, T) distances ||z_i - z_j|| with an exact zero, and a zero gradient, where frames coincide.

    The square root's derivative is infinite at 0, so zero (and the diagonal, which a matmul-built squared
    distance leaves at rounding noise) is handled explicitly instead of through an epsilon.
    """
    squared = squared_distances(z, z)
    frames = z.shape[1]
    diagonal = torch.eye(frames, dtype=torch.bool, device=z.device)
    is_zero = diagonal | (squared <= 0)
    safe = torch.where(is_zero, torch.ones_like(squared), squared)
    return torch.where(is_zero, torch.zeros_like(squared), safe.sqrt())


def _checked_lengths(lengths: Optional[Tensor], batch: int, frames: int, device) -> Tensor:
    if lengths is None:
        return torch.full((batch,), frames, dtype=torch.long, device=device)
    if lengths.shape != (batch,):
        raise ValueError(f"contrastive_idm: lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if bool((lengths < 1).any()) or bool((lengths > frames).any()):
        raise ValueError(
            f"contrastive_idm: every entry of lengths must be in [1, {frames}], got {lengths.tolist()}"
        )
    return lengths.to(device=device, dtype=torch.long)
