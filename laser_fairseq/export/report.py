"""What an export reports: counts of the merge, the sha256 of the written weights, and notes."""

import os
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from ..files import sha256_of
from ..models.upstream import FAIRSEQ, HF
from .plan import HEAD_PREFIX, ExportPlan, is_in_blocks


@dataclass
class ExportReport:
    output: str
    fmt: str
    kind: str
    source_path: str
    laser_path: str
    num_updates: Optional[int]
    num_layers: int
    trained_blocks: List[int]
    replaced_tensors: int
    replaced_parameters: int
    changed_tensors: int  # tensors of the replaced blocks that training actually changed
    unchanged_tensors: int
    unchanged_parameters: int
    head_parameters: int
    sha256: str
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"exported {self.output} ({self.kind}, {self.fmt} format), verified",
            f"  source upstream : {self.source_path} ({self.num_layers} blocks)",
            f"  LASER checkpoint: {self.laser_path} ({self.num_updates} updates)",
            f"  blocks replaced : {self.trained_blocks} -> {self.replaced_tensors} tensors, "
            f"{self.replaced_parameters:,} parameters ({self.changed_tensors} tensors changed by training)",
            f"  unchanged       : {self.unchanged_tensors} tensors, {self.unchanged_parameters:,} parameters, "
            f"bit-identical to the source",
            f"  dropped         : projection head, {self.head_parameters:,} parameters",
            f"  sha256          : {self.sha256}",
        ]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


def build_report(plan: ExportPlan, output: str) -> ExportReport:
    replaced = [key for key in plan.merged if is_in_blocks(key, plan.trained_blocks)]
    unchanged = [key for key in plan.merged if not is_in_blocks(key, plan.trained_blocks)]
    changed = [key for key in replaced if not torch.equal(plan.merged[key], plan.source.weights[key])]
    head = [value for key, value in plan.run.model_state.items() if key.startswith(HEAD_PREFIX)]
    return ExportReport(
        output=output,
        fmt=plan.fmt,
        kind=plan.source.kind,
        source_path=plan.source.path,
        laser_path=plan.run.path,
        num_updates=plan.run.num_updates,
        num_layers=plan.num_layers,
        trained_blocks=list(plan.trained_blocks),
        replaced_tensors=len(replaced),
        replaced_parameters=sum(plan.merged[key].numel() for key in replaced),
        changed_tensors=len(changed),
        unchanged_tensors=len(unchanged),
        unchanged_parameters=sum(plan.merged[key].numel() for key in unchanged),
        head_parameters=sum(value.numel() for value in head),
        sha256=sha256_of(weights_file(output, plan.fmt)),
        notes=_notes(plan, output),
    )


def weights_file(output: str, fmt: str) -> str:
    """The file holding the weights: ``output`` itself, or model.safetensors in an HF directory."""
    return os.path.join(output, "model.safetensors") if fmt == HF else output


def _notes(plan: ExportPlan, output: str) -> List[str]:
    notes = []
    head = [key for key in plan.merged if key.startswith(("final_proj.", "label_embs_concat"))]
    if plan.fmt == HF and head:
        notes.append(
            f"HuBERT's pretraining head ({', '.join(head)}; "
            f"{sum(plan.merged[key].numel() for key in head):,} parameters) has no place in transformers' "
            f"HubertModel and was not written"
        )
    stale = os.path.join(os.path.dirname(os.path.abspath(output)), f"{_stem(output)}.converted.pt")
    if plan.fmt == FAIRSEQ and os.path.exists(stale):
        notes.append(
            f"{stale} exists: s3prl's hubert_local(fairseq=True) reuses that conversion instead of this file; "
            f"delete it (or use --format s3prl)"
        )
    return notes


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]
