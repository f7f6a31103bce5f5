"""The export's errors: both name the file concerned and what to do."""

from ..checkpoint_io import CheckpointError


class ExportError(CheckpointError):
    """The export cannot be done; the message names the file and what to do."""


class ExportVerificationError(ExportError):
    """The written file does not hold exactly the expected tensors."""
