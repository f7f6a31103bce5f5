"""The whole export: plan, write in the chosen format, verify, report."""

from typing import Iterable, Optional

from ..models.upstream import HF
from .errors import ExportError
from .formats import CHECKPOINT_BUILDERS
from .model_card import CardOptions, read_effect, write_model_card
from .plan import plan_export
from .report import ExportReport, build_report
from .verify import check_output_path, verify_weights, write_verified


def export_checkpoint(
    laser_checkpoint: str,
    output: str,
    fmt: Optional[str] = None,
    upstream: Optional[str] = None,
    force: bool = False,
    extra_safe_globals: Iterable[str] = (),
    card=None,
) -> ExportReport:
    """Export, verify and describe. Raises ExportError / CheckpointError with a message naming the file.

    ``card`` (:class:`~laser_fairseq.export.model_card.CardOptions`: base model id, license, a study's
    results) describes the model card an HF export gets as README.md; an HF export gets a card in any case,
    other formats none.
    """
    plan = plan_export(laser_checkpoint, fmt, upstream, extra_safe_globals)
    if card is not None and card != CardOptions() and plan.fmt != HF:
        raise ExportError(f"--base-model, --license and --effect-results describe the model card, which only "
                          f"--format hf writes (this export is {plan.fmt})")
    if card is not None and card.effect_results:
        read_effect(card.effect_results)  # a bad results file stops before anything is written
    check_output_path(output, [plan.run.path, plan.source.path], force, is_directory_format=plan.fmt == HF)
    notes = []
    if plan.fmt == HF:
        from .hf import write_hf_export  # transformers is imported only for this format

        difference = write_hf_export(plan, output, extra_safe_globals)
        notes.append(f"transformers loads it with no missing/unexpected keys; hidden states of every layer within "
                     f"{difference:.2g} of LASER's upstream on a padded batch (relative where |h| > 1)")
        card_path = write_model_card(plan, output, card or CardOptions())
        notes.append(f"model card: {card_path}")
    else:
        write_verified(CHECKPOINT_BUILDERS[plan.fmt](plan.source, plan.merged), output, plan)
    report = build_report(plan, output)
    report.notes.extend(notes)
    return report


def verify_export(
    output: str,
    laser_checkpoint: str,
    fmt: Optional[str] = None,
    upstream: Optional[str] = None,
    extra_safe_globals: Iterable[str] = (),
):
    """Check an already written export against its two input files (raises ExportVerificationError)."""
    plan = plan_export(laser_checkpoint, fmt, upstream, extra_safe_globals)
    if plan.fmt == HF:
        from .hf import verify_hf_export

        verify_hf_export(output, plan, extra_safe_globals)
    else:
        verify_weights(output, plan)
