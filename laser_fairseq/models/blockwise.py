"""The block-by-block interface shared by every upstream kind.

A subclass provides the model-specific steps:

    conv_features(source)                -> (B, T, C_cnn)   the CNN feature extractor on unpadded waveforms
    embed_features(features, frame_mask) -> EncoderState    projection, positional conv, input layer norm
    block(index, state)                  -> EncoderState    one transformer block
    finalize(state)                      -> (B, T, C)       final layer norm of pre-LN models

and this base class composes them. Padded batches are embedded utterance by utterance through the CNN:
the group norm of the first conv layer (HuBERT/WavLM Base) normalises over time, so zero padding would
change every frame of a shorter utterance. Each utterance's frames therefore equal those of a batch of one
(the authors' setting), whatever it is batched with.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .encoder_state import EncoderState


class BlockwiseUpstream(nn.Module):
    kind: str = ""
    normalize: bool = False  # layer-normalise each waveform before the CNN
    original_prefix: str = ""  # where the original checkpoint's weights sit in this module's state dict

    @property
    def layers(self) -> nn.ModuleList:
        raise NotImplementedError

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def embed_dim(self) -> int:
        raise NotImplementedError

    def conv_features(self, source: Tensor) -> Tensor:
        raise NotImplementedError

    def embed_features(self, features: Tensor, frame_padding_mask: Optional[Tensor]) -> EncoderState:
        raise NotImplementedError

    def block(self, index: int, state: EncoderState) -> EncoderState:
        raise NotImplementedError

    def finalize(self, state: EncoderState) -> Tensor:
        raise NotImplementedError

    def original_state_dict(self) -> dict:
        """The weights under the key names of the original checkpoint format."""
        prefix = self.original_prefix
        return {key[len(prefix):]: value for key, value in self.state_dict().items() if key.startswith(prefix)}

    def embed(self, source: Tensor, padding_mask: Optional[Tensor] = None) -> EncoderState:
        """(B, S) waveforms, (B, S) bool mask (True = padding) or None -> state entering block 0."""
        return self.embed_features(*self.padded_conv_features(source, padding_mask))

    def padded_conv_features(self, source: Tensor, padding_mask: Optional[Tensor] = None):
        """(B, S) waveforms -> ((B, T, C_cnn) CNN features, (B, T) frame padding mask or None), each
        utterance normalised and run through the CNN on its own valid samples."""
        if padding_mask is None or not bool(padding_mask.any()):
            return self.conv_features(self._normalized(source)), None
        lengths = (~padding_mask).sum(dim=1).tolist()
        per_utterance = [
            self.conv_features(self._normalized(source[row : row + 1, :length]))[0]
            for row, length in enumerate(lengths)
        ]
        return pad_frames(per_utterance)

    def _normalized(self, source: Tensor) -> Tensor:
        return F.layer_norm(source, source.shape[-1:]) if self.normalize else source

    def run_blocks(self, state: EncoderState, start: int, stop: int) -> EncoderState:
        for index in range(start, stop):
            state = self.block(index, state)
        return state

    def forward(self, source: Tensor, padding_mask: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """(B, T, C) output of the last block and the (B, T) frame padding mask (None if unpadded)."""
        state = self.run_blocks(self.embed(source, padding_mask), 0, self.num_layers)
        return self.finalize(state), state.padding_mask

    def hidden_states(self, source: Tensor, padding_mask: Optional[Tensor] = None) -> List[Tensor]:
        """[input of block 0, output of block 0, ..., finalized output of the last block], each (B, T, C)."""
        return self.conv_and_hidden_states(source, padding_mask)[1]

    def conv_and_hidden_states(
        self, source: Tensor, padding_mask: Optional[Tensor] = None
    ) -> Tuple[Tensor, List[Tensor]]:
        """((B, T, C_cnn) CNN features, ``hidden_states``) from one pass: the CNN runs once."""
        features, frame_padding_mask = self.padded_conv_features(source, padding_mask)
        state = self.embed_features(features, frame_padding_mask)
        states = [state.x.transpose(0, 1)]
        for index in range(self.num_layers):
            state = self.block(index, state)
            states.append(state.x.transpose(0, 1))
        states[-1] = self.finalize(state)
        return features, states

def pad_frames(sequences: List[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
    """Right-pad (T_i, C) sequences into (B, T_max, C) with a (B, T_max) mask (True = padding) or None."""
    longest = max(seq.shape[0] for seq in sequences)
    batch = sequences[0].new_zeros((len(sequences), longest, sequences[0].shape[-1]))
    mask = torch.zeros((len(sequences), longest), dtype=torch.bool, device=batch.device)
    for row, seq in enumerate(sequences):
        batch[row, : seq.shape[0]] = seq
        mask[row, seq.shape[0] :] = True
    return batch, (mask if bool(mask.any()) else None)


def frame_lengths(padding_mask: Optional[Tensor], batch: int, frames: int, device) -> Tensor:
    """(B,) number of valid frames from a (B, T) padding mask (None = all valid)."""
    if padding_mask is None:
        return torch.full((batch,), frames, dtype=torch.long, device=device)
    return (~padding_mask).sum(dim=1)
