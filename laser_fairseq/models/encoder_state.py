"""The state passed between transformer blocks of an upstream encoder.

Both upstream kinds (fairseq HuBERT, unilm WavLM) are driven block by block through the same small
interface, so the LASER model can run the frozen trunk without autograd and the top blocks with it:

    state = encoder.embed(source, padding_mask)     # CNN, feature projection, positional conv
    for i in range(encoder.num_layers):
        state = encoder.block(i, state)             # one transformer block
    features = encoder.finalize(state)              # (B, T, C), final layer norm for pre-LN models
"""

from dataclasses import dataclass, replace
from typing import Optional

from torch import Tensor


@dataclass
class EncoderState:
    """Hidden state entering the next transformer block.

    x: (T, B, C) time-first, as fairseq and unilm run their blocks.
    padding_mask: (B, T) bool, True at padded frames, or None when nothing is padded.
    position_bias: WavLM's relative position bias (B * H, T, T), computed by block 0 and reused by every
        later block; None for HuBERT and before block 0 has run.
    """

    x: Tensor
    padding_mask: Optional[Tensor] = None
    position_bias: Optional[Tensor] = None

    def with_x(self, x: Tensor, position_bias: Optional[Tensor] = None) -> "EncoderState":
        """A copy holding new hidden states (and, if given, a new position bias)."""
        if position_bias is None:
            position_bias = self.position_bias
        return replace(self, x=x, position_bias=position_bias)

    def detached(self) -> "EncoderState":
        """A copy whose tensors carry no autograd history (the boundary of the frozen trunk)."""
        bias = None if self.position_bias is None else self.position_bias.detach()
        return EncoderState(self.x.detach(), self.padding_mask, bias)
