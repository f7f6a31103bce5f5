"""Export a LASER training checkpoint as an upstream checkpoint in its ORIGINAL format.

The trained top blocks are merged into the original upstream file, the projection head is dropped, and the
file is written so that its usual consumers (fairseq, s3prl, transformers) load it exactly like the original;
it is read back and checked before success is reported. What each format holds, which formats a source can
be exported to and why: docs/export.md. One job a module, imported in this order (no cycles):

- :mod:`.errors`: ExportError, ExportVerificationError;
- :mod:`.run`: the inputs (the LASER run, the original upstream);
- :mod:`.formats`: the original formats (fairseq HuBERT, s3prl, unilm WavLM) and the export matrix;
- :mod:`.plan`: the trained blocks, the frozen-weight check and the merge (ExportPlan);
- :mod:`.verify`: the output path, writing and the tensor-by-tensor check;
- :mod:`.report`: ExportReport;
- :mod:`.hf`: the Hugging Face transformers directory (imports transformers when used);
- :mod:`.model_card`: the README.md of an HF export;
- :mod:`.pipeline`: ``export_checkpoint`` and ``verify_export``, the whole export.

Everything public is re-exported here: ``from laser_fairseq.export import export_checkpoint``.
"""

from ..files import sha256_of
from .errors import ExportError, ExportVerificationError
from .formats import (
    ALL_FORMATS,
    CHECKPOINT_BUILDERS,
    FORMATS_BY_SOURCE,
    WEIGHTS_KEY_BY_FORMAT,
    choose_format,
    fairseq_hubert_checkpoint,
    genuine_hubert_cfg,
    s3prl_hubert_checkpoint,
    unilm_wavlm_checkpoint,
)
from .model_card import CardOptions, ModelCardError
from .pipeline import export_checkpoint, verify_export
from .plan import (
    BLOCK_KEY,
    HEAD_PREFIX,
    LASER_PREFIX_BY_KIND,
    ExportPlan,
    block_index,
    check_frozen_weights_unchanged,
    count_blocks,
    is_in_blocks,
    merge_weights,
    plan_export,
    top_blocks,
    trained_upstream_weights,
)
from .report import ExportReport, build_report, weights_file
from .run import LaserRun, read_laser_run, read_source_upstream, resolve_upstream_path
from .verify import check_output_path, check_written_weights, exported_weights, verify_weights, write_verified

__all__ = [
    "ALL_FORMATS", "BLOCK_KEY", "CHECKPOINT_BUILDERS", "FORMATS_BY_SOURCE", "HEAD_PREFIX", "LASER_PREFIX_BY_KIND",
    "WEIGHTS_KEY_BY_FORMAT", "CardOptions", "ExportError", "ExportPlan", "ExportReport", "ExportVerificationError",
    "LaserRun", "ModelCardError", "block_index", "build_report", "check_frozen_weights_unchanged",
    "check_output_path", "check_written_weights", "choose_format", "count_blocks", "export_checkpoint",
    "exported_weights", "fairseq_hubert_checkpoint", "genuine_hubert_cfg", "is_in_blocks", "merge_weights",
    "plan_export", "read_laser_run", "read_source_upstream", "resolve_upstream_path", "s3prl_hubert_checkpoint",
    "sha256_of", "top_blocks", "trained_upstream_weights", "unilm_wavlm_checkpoint", "verify_export",
    "verify_weights", "weights_file", "write_verified",
]
