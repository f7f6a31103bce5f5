"""The model card (README.md) that ``--format hf`` writes into the exported directory.

Everything in it is read from the inputs, never typed by hand: the LASER settings (loss weights, trained and
frozen blocks, perturbation, learning rate, batch) and the number of updates from the LASER checkpoint's
cfg, the sha256 of that checkpoint, of the source upstream and of the written weights, the measured effect
from a study's results.json (``scripts/evaluate_laser.py``) when one is given. The license and the Hub id of
the base model come from the caller (``--license``, ``--base-model``); a license nobody gave is written as
``unknown`` with a sentence saying so, never guessed. The YAML front matter is the Hub's metadata
(``license``, ``base_model``, ``library_name``, ``tags``, ``pipeline_tag``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

from ..checkpoint_io import CheckpointError
from ..files import sha256_of, write_text

CARD_NAME = "README.md"
UNKNOWN_LICENSE = "unknown"

# The LASER paper, as in CITATION.cff and docs/citing.md (tests/test_model_card.py checks they agree).
PAPER_BIBTEX = """@inproceedings{meghanani2024laser,
  title     = {{LASER}: Learning by Aligning Self-supervised Representations of Speech for Improving Content-related Tasks},
  author    = {Meghanani, Amit and Hain, Thomas},
  booktitle = {Proc. Interspeech 2024},
  year      = {2024},
  eprint    = {2406.09153},
  archivePrefix = {arXiv},
}"""
PAPER_URL = "https://arxiv.org/abs/2406.09153"

# (results.json key, column title); the means over seeds of each study variant
EFFECT_COLUMNS = (
    ("phone_acc_top", "phone acc (top layer) ↑"),
    ("phone_per_top", "PER (top layer) ↓"),
    ("retrieval_map_top", "cross-voice MAP (top) ↑"),
    ("invariance_top", "invariance (top) ↑"),
)


class ModelCardError(CheckpointError):
    """An input of the card that cannot be used (e.g. a results file that is not a study's)."""


@dataclass(frozen=True)
class CardOptions:
    """What the caller says about the export (the rest is read from the files)."""

    base_model: Optional[str] = None  # Hub id of the upstream, e.g. facebook/hubert-base-ls960
    license: Optional[str] = None  # Hub license id; None: unknown, said so in the card
    effect_results: Optional[str] = None  # a study's results.json


@dataclass(frozen=True)
class LaserSettings:
    """The LASER run's settings, from its checkpoint's cfg."""

    num_updates: Optional[int]
    trainable_layers: int
    num_layers: int
    sdtw_weight: float
    alpha: float
    gamma: float
    sigma: float
    margin: float
    speed_factors: List[float]
    pitch_shifts: List[float]
    swap_views: bool
    lr: List[float]
    max_update: int
    batch_size: Optional[int]
    update_freq: List[int]
    proj_dim: int
    seed: Optional[int]

    @property
    def frozen_layers(self) -> int:
        return self.num_layers - self.trainable_layers


def _section(cfg: dict, name: str) -> dict:
    section = cfg.get(name) or {}
    return dict(section) if hasattr(section, "items") else {}


def _floats(value) -> List[float]:
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        return [float(value)]
    return [float(item) for item in value]  # a list, or omegaconf's ListConfig


def laser_settings(cfg: dict, num_updates: Optional[int], num_layers: int) -> LaserSettings:
    """The settings a card reports, from a LASER checkpoint's cfg (plain dict) and its block count."""
    criterion, task, model = _section(cfg, "criterion"), _section(cfg, "task"), _section(cfg, "model")
    optimization, dataset, common = _section(cfg, "optimization"), _section(cfg, "dataset"), _section(cfg, "common")
    return LaserSettings(
        num_updates=num_updates,
        trainable_layers=int(model.get("trainable_layers", 2)),
        num_layers=num_layers,
        sdtw_weight=float(criterion.get("sdtw_weight", 1.0)),
        alpha=float(criterion.get("alpha", 0.4)),
        gamma=float(criterion.get("gamma", 0.1)),
        sigma=float(criterion.get("sigma", 0.0)),
        margin=float(criterion.get("margin", 1.1)),
        speed_factors=_floats(task.get("speed_factors", [])),
        pitch_shifts=_floats(task.get("pitch_shifts", [])),
        swap_views=bool(task.get("swap_views", True)),
        lr=_floats(optimization.get("lr", [])),
        max_update=int(optimization.get("max_update", 0)),
        batch_size=dataset.get("batch_size"),
        update_freq=[int(item) for item in _floats(optimization.get("update_freq") or [1])],
        proj_dim=int(model.get("proj_dim", 256)),
        seed=common.get("seed"),
    )


# ------------------------------------------------------------------------------------------- the effect


def read_effect(path: str) -> Dict[str, Dict[str, float]]:
    """variant -> {"seeds": n, column key: mean over seeds} from a study's results.json."""
    try:
        with open(path, encoding="utf-8") as handle:
            records = json.load(handle)["records"]
        variants: Dict[str, List[dict]] = {}
        for record in records:
            variants.setdefault(str(record["variant"]), []).append(record)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelCardError(
            f"{path}: not a study's results.json (scripts/evaluate_laser.py writes one: "
            f"{{'records': [{{'variant': ..., 'phone_acc_top': ...}}, ...]}}): {error}"
        ) from None
    if not variants:
        raise ModelCardError(f"{path}: the study has no records")
    effect = {}
    for variant, rows in variants.items():
        means = {"seeds": float(len(rows))}
        for key, _ in EFFECT_COLUMNS:
            values = [float(row[key]) for row in rows if isinstance(row.get(key), (int, float))]
            means[key] = sum(values) / len(values) if values else math.nan
        effect[variant] = means
    chances = {key: value for key, value in records[0].items() if key.endswith("_chance") and value is not None}
    effect["_chance"] = {key: float(value) for key, value in chances.items()}
    return effect


def _number(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def effect_section(path: str, sha256: str) -> List[str]:
    effect = read_effect(path)
    chances = effect.pop("_chance")
    lines = [
        "## Measured effect",
        "",
        f"From the study `{os.path.basename(path)}` (sha256 `{sha256}`), written by laser-fairseq's "
        f"`scripts/evaluate_laser.py`: LASER, its ablations and the upstream, trained and measured with the "
        f"study's own upstream, data and updates (see the study's results.md), not necessarily this checkpoint's. "
        f"Means over seeds:",
        "",
        "| variant | seeds | " + " | ".join(title for _, title in EFFECT_COLUMNS) + " |",
        "|---|---:|" + "---:|" * len(EFFECT_COLUMNS),
    ]
    for variant, means in effect.items():
        cells = [_number(means[key]) for key, _ in EFFECT_COLUMNS]
        lines.append(f"| {variant} | {int(means['seeds'])} | " + " | ".join(cells) + " |")
    if chances:
        lines += ["", "Chance levels: " + ", ".join(f"{key} {value:.3f}" for key, value in sorted(chances.items()))
                  + "."]
    return lines + [""]


# --------------------------------------------------------------------------------------------- the card


def _yaml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar, quotes and all


def front_matter(kind: str, options: CardOptions) -> List[str]:
    lines = ["---", f"license: {_yaml_string(options.license or UNKNOWN_LICENSE)}"]
    if options.base_model:
        lines.append(f"base_model: {_yaml_string(options.base_model)}")
    lines += [
        "library_name: transformers",
        "pipeline_tag: feature-extraction",
        "tags:",
        "- laser",
        f"- {kind}",
        "- speech",
        "- self-supervised-learning",
        "---",
    ]
    return lines


def _listed(values: Sequence[float]) -> str:
    return ", ".join(f"{value:g}" for value in values) if values else "none"


def model_card_text(
    kind: str,
    settings: LaserSettings,
    laser_checkpoint: str,
    laser_sha256: str,
    upstream_path: str,
    upstream_sha256: Optional[str],
    weights_sha256: str,
    options: CardOptions = CardOptions(),
    effect_sha256: Optional[str] = None,
) -> str:
    """The README.md of an HF export (YAML front matter, then markdown)."""
    model_class = {"hubert": "HubertModel", "wavlm": "WavLMModel"}.get(kind, "AutoModel")
    base = f"`{options.base_model}`" if options.base_model else "not given (`--base-model`)"
    updates = "unknown" if settings.num_updates is None else f"{settings.num_updates:,}"
    trained = list(range(settings.frozen_layers, settings.num_layers))
    lines = front_matter(kind, options) + [
        "",
        f"# LASER fine-tuned {kind}",
        "",
        f"A {kind} upstream fine-tuned with LASER ([Meghanani and Hain, Interspeech 2024]({PAPER_URL})): "
        f"the top transformer blocks were trained so that two perturbed views of an utterance align "
        f"(soft-DTW) without collapsing (Contrastive-IDM). Exported with laser-fairseq "
        f"(`scripts/export_checkpoint.py --format hf`) and verified against the training checkpoint with "
        f"transformers itself. The weights are the base model's outside the trained blocks, bit for bit.",
        "",
        "## Base model",
        "",
        f"- Hub id: {base}",
        f"- source file: `{os.path.basename(upstream_path)}`"
        + (f" (sha256 `{upstream_sha256}`)" if upstream_sha256 else ""),
        "",
        "## LASER settings (from the training checkpoint)",
        "",
        "| setting | value |",
        "|---|---|",
        f"| updates | {updates} (of `max_update` {settings.max_update:,}) |",
        f"| trained blocks | top {settings.trainable_layers} of {settings.num_layers} (blocks {trained}); "
        f"K = {settings.frozen_layers} frozen |",
        f"| loss | {settings.sdtw_weight:g} × soft-DTW (gamma {settings.gamma:g}) + {settings.alpha:g} × "
        f"Contrastive-IDM (sigma {settings.sigma:g}, margin {settings.margin:g}) |",
        f"| perturbation | speed factors {_listed(settings.speed_factors)}; pitch shifts "
        f"{_listed(settings.pitch_shifts)} semitones; views swapped: {str(settings.swap_views).lower()} |",
        f"| learning rate | {_listed(settings.lr)} |",
        f"| batch | {settings.batch_size if settings.batch_size is not None else 'by max_tokens'} pairs × "
        f"update_freq {_listed(settings.update_freq)} per GPU |",
        f"| projection head | {settings.proj_dim} dims (dropped from the export) |",
        f"| seed | {settings.seed} |",
        "",
        "## Provenance",
        "",
        f"- LASER training checkpoint: `{os.path.basename(laser_checkpoint)}`, sha256 `{laser_sha256}`",
        f"- exported weights (`model.safetensors`): sha256 `{weights_sha256}`",
        "",
    ]
    if options.effect_results:
        lines += effect_section(options.effect_results, effect_sha256 or "")
    else:
        lines += ["## Measured effect", "", "No study was given (`--effect-results`): this card reports no "
                  "measured effect of the fine-tuning.", ""]
    lines += [
        "## Use",
        "",
        "```python",
        f"from transformers import AutoFeatureExtractor, {model_class}",
        "",
        f'model = {model_class}.from_pretrained("PATH_OR_HUB_ID").eval()',
        'extractor = AutoFeatureExtractor.from_pretrained("PATH_OR_HUB_ID")',
        "```",
        "",
        "## License",
        "",
    ]
    if options.license:
        lines.append(f"`{options.license}`, as given by the publisher. The weights are a modified copy of the base "
                     f"model: its own terms apply too.")
    else:
        lines.append("Unknown: no license was given (`--license`). The weights are a modified copy of the base "
                     "model; its license applies, check it before publishing.")
    lines += ["", "## Citation", "", "```bibtex", PAPER_BIBTEX, "```", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- writing


def upstream_digest(path: str) -> Optional[str]:
    """sha256 of the source upstream file (of model.safetensors for an HF directory), None if there is none."""
    if os.path.isfile(path):
        return sha256_of(path)
    weights = os.path.join(path, "model.safetensors")
    return sha256_of(weights) if os.path.isfile(weights) else None


def card_for_plan(plan, output: str, options: CardOptions) -> str:
    """The card of the HF export in ``output`` made from ``plan`` (:class:`~laser_fairseq.export.plan.ExportPlan`)."""
    settings = laser_settings(plan.run.cfg or {}, plan.run.num_updates, plan.num_layers)
    effect_sha = sha256_of(options.effect_results) if options.effect_results else None
    return model_card_text(
        kind=plan.source.kind,
        settings=settings,
        laser_checkpoint=plan.run.path,
        laser_sha256=sha256_of(plan.run.path),
        upstream_path=plan.source.path,
        upstream_sha256=upstream_digest(plan.source.path),
        weights_sha256=sha256_of(os.path.join(output, "model.safetensors")),
        options=options,
        effect_sha256=effect_sha,
    )


def write_model_card(plan, output: str, options: CardOptions) -> str:
    """Write ``output/README.md`` (through a temporary file); returns its path."""
    text = card_for_plan(plan, output, options)
    path = os.path.join(output, CARD_NAME)
    write_text(path, text)
    return path
