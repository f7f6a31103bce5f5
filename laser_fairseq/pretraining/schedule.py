"""A pretraining schedule: the iterations of a HuBERT pretraining run, read from YAML and validated.

::

    config: tiny_cpu            # fairseq-hydra-train config (a name in examples/hubert_pretraining/config
                                # or a path to a .yaml file, relative to this schedule)
    seed: 1                     # k-means, fairseq (common.seed), the random baseline
    feature_shards: 1           # feature dumping is split into this many shards (processes / GPUs)
    overrides: {...}            # fairseq overrides for every iteration, e.g. optimization.lr: [0.0005]
    kmeans: {...}               # MiniBatchKMeans settings for every iteration (see KmeansSettings)
    analysis: {...}             # the layer analysis after every iteration (see AnalysisSettings)
    curve: {every: 500}         # also analyse the checkpoints kept every 500 updates (see CurveSettings)
    iterations:
      - target: mfcc            # 39-d MFCC + deltas at 100 Hz (labels at 100 Hz)
        n_clusters: 100
        max_update: 250000
        init: scratch           # or previous: start from the previous iteration's trunk
      - target: {layer: 6}      # output of transformer block 6 of the previous iteration (labels at 50 Hz)
        n_clusters: 500
        max_update: 400000
        init: scratch
        overrides: {...}        # merged over the schedule-level overrides
        kmeans: {...}           # merged over the schedule-level kmeans settings

Every error names the schedule file and the YAML key (``iterations[2].target.layer``) and says what to do.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Tuple

import yaml

from ..checkout import REPO

CONFIG_DIR = os.path.join(REPO, "examples", "hubert_pretraining", "config")

MFCC = "mfcc"
LAYER = "layer"
SCRATCH = "scratch"
PREVIOUS = "previous"
MFCC_LABEL_RATE = 100  # fairseq's recipe: MFCC frames every 10 ms
LAYER_LABEL_RATE = 50  # HuBERT frames every 20 ms

# Overrides the driver sets itself for every iteration; a schedule may not set them.
DRIVER_KEYS = (
    "task.data", "task.label_dir", "task.labels", "task.label_rate", "model.label_rate", "common.seed",
    "common.user_dir", "checkpoint.save_dir", "checkpoint.restore_file",
    "checkpoint.finetune_from_model", "optimization.max_update", "hydra.run.dir",
)
# With curve.every set, the driver also sets how often fairseq keeps a checkpoint (pretraining/curve.py).
SAVE_INTERVAL_KEY = "checkpoint.save_interval_updates"
KEEP_INTERVAL_KEY = "checkpoint.keep_interval_updates"
CURVE_KEYS = (SAVE_INTERVAL_KEY, KEEP_INTERVAL_KEY)
# Model fields that decide tensor shapes: a warm start (init: previous) must keep them.
SHAPE_KEYS = (
    "model.encoder_layers", "model.encoder_embed_dim", "model.encoder_ffn_embed_dim",
    "model.encoder_attention_heads", "model.conv_feature_layers", "model.conv_pos", "model.conv_pos_groups",
    "model.final_dim", "model.untie_final_proj", "model.extractor_mode", "model.conv_bias",
    "model.target_glu", "model.layer_norm_first",
)
_OVERRIDE_KEY = re.compile(r"^\+{0,2}[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class ScheduleError(ValueError):
    """A schedule that cannot be run; the message names the file, the YAML key and what to do."""


@dataclass(frozen=True)
class KmeansSettings:
    """fairseq's ``learn_kmeans.py`` defaults (scikit-learn MiniBatchKMeans on a sample of utterances)."""

    sample_fraction: float = 1.0  # fraction of the training utterances whose frames k-means sees
    max_iter: int = 100
    batch_size: int = 10000
    tol: float = 0.0
    max_no_improvement: int = 100
    n_init: int = 20
    reassignment_ratio: float = 0.0


@dataclass(frozen=True)
class AnalysisSettings:
    enabled: bool = True
    split: str = "valid"  # manifest analysed (its train.tsv neighbour trains probes that need training data)
    max_utterances: Optional[int] = None  # the first N audio lines; None = all
    seed: int = 1  # perturbation seed of the invariance measure
    probe_train_utterances: int = 500  # train.tsv utterances the phone probe trains on (evenly spaced)


@dataclass(frozen=True)
class CurveSettings:
    """Quality along training (``pretraining/curve.py``): the layer analysis of the checkpoint kept every
    ``every`` updates of each iteration; None: the final models only."""

    every: Optional[int] = None


@dataclass(frozen=True)
class Target:
    kind: str  # MFCC or LAYER
    layer: Optional[int] = None  # 1-based transformer block of the previous iteration's model

    @property
    def label_rate(self) -> int:
        return MFCC_LABEL_RATE if self.kind == MFCC else LAYER_LABEL_RATE

    def describe(self) -> str:
        return "mfcc" if self.kind == MFCC else f"layer {self.layer}"


@dataclass(frozen=True)
class Iteration:
    index: int  # 1-based
    target: Target
    n_clusters: int
    max_update: int
    init: str  # SCRATCH or PREVIOUS
    config_path: str  # absolute path of the fairseq-hydra-train yaml
    overrides: Dict[str, Any]  # schedule-level overrides merged with the iteration's
    kmeans: KmeansSettings

    @property
    def name(self) -> str:
        return f"iter{self.index}"


@dataclass(frozen=True)
class Schedule:
    path: str
    seed: int
    feature_shards: int
    iterations: Tuple[Iteration, ...]
    analysis: AnalysisSettings
    text: str = field(repr=False, default="")  # the YAML as read, kept in the run directory
    curve: CurveSettings = field(default_factory=CurveSettings)

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]

    @property
    def total_updates(self) -> int:
        return sum(iteration.max_update for iteration in self.iterations)


TOP_KEYS = {"config", "seed", "feature_shards", "overrides", "kmeans", "analysis", "curve", "iterations"}
ITERATION_KEYS = {"target", "n_clusters", "max_update", "init", "config", "overrides", "kmeans"}


def load_schedule(path: str) -> Schedule:
    """Read and validate a schedule file."""
    if not os.path.isfile(path):
        raise ScheduleError(f"{path}: schedule file not found (presets: examples/hubert_pretraining/*.yaml)")
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ScheduleError(f"{path}: not valid YAML: {error}") from None
    return parse_schedule(data, os.path.abspath(path), text)


def parse_schedule(data: Any, path: str, text: str = "") -> Schedule:
    where = _Where(path)
    _mapping(data, where, "the schedule", TOP_KEYS)
    seed = _integer(data.get("seed", 1), where, "seed", minimum=0)
    shards = _integer(data.get("feature_shards", 1), where, "feature_shards", minimum=1)
    base_config = data.get("config")
    base_overrides = _overrides(data.get("overrides", {}), where, "overrides")
    base_kmeans = _kmeans(data.get("kmeans", {}), KmeansSettings(), where, "kmeans")
    analysis = _analysis(data.get("analysis", {}), where)
    curve = _curve(data.get("curve", {}), analysis, where)
    entries = data.get("iterations")
    if not isinstance(entries, list) or not entries:
        raise ScheduleError(where("iterations", "must be a non-empty list of iterations"))
    iterations: List[Iteration] = []
    for number, entry in enumerate(entries, start=1):
        key = f"iterations[{number}]"
        iterations.append(
            _iteration(entry, number, key, where, base_config, base_overrides, base_kmeans, iterations)
        )
    if curve.every is not None:
        _check_curve_keys(data, where)
    return Schedule(path, seed, shards, tuple(iterations), analysis, text, curve)


class _Where:
    """Formats ``file: key: problem`` messages."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, key: str, problem: str) -> str:
        return f"{self.path}: {key}: {problem}"


def _mapping(value: Any, where: _Where, key: str, allowed: set):
    if not isinstance(value, dict):
        raise ScheduleError(where(key, f"must be a mapping, found {type(value).__name__}"))
    unknown = sorted(set(value) - allowed)
    if unknown:
        prefix = "" if key == "the schedule" else f"{key}."
        raise ScheduleError(
            where(f"{prefix}{unknown[0]}", f"unknown key; allowed here: {', '.join(sorted(allowed))}")
        )


def _integer(value: Any, where: _Where, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScheduleError(where(key, f"must be an integer >= {minimum}, found {value!r}"))
    return value


def _iteration(entry, number, key, where, base_config, base_overrides, base_kmeans, previous) -> Iteration:
    _mapping(entry, where, key, ITERATION_KEYS)
    for required in ("target", "n_clusters", "max_update"):
        if required not in entry:
            raise ScheduleError(where(f"{key}.{required}", "missing (every iteration needs target, n_clusters "
                                                            "and max_update)"))
    target = _target(entry["target"], where, f"{key}.target", number)
    n_clusters = _integer(entry["n_clusters"], where, f"{key}.n_clusters", minimum=2)
    max_update = _integer(entry["max_update"], where, f"{key}.max_update", minimum=1)
    init = entry.get("init", SCRATCH)
    if init not in (SCRATCH, PREVIOUS):
        raise ScheduleError(where(f"{key}.init", f"must be '{SCRATCH}' or '{PREVIOUS}', found {init!r}"))
    if init == PREVIOUS and number == 1:
        raise ScheduleError(where(f"{key}.init", "the first iteration has no previous model; use 'scratch'"))
    config = entry.get("config", base_config)
    if config is None:
        raise ScheduleError(where(f"{key}.config", "no fairseq config: set 'config' at the top or here"))
    config_key = f"{key}.config" if "config" in entry else "config"
    config_path = _config_path(config, where, config_key)
    overrides = dict(base_overrides)
    overrides.update(_overrides(entry.get("overrides", {}), where, f"{key}.overrides"))
    kmeans = _kmeans(entry.get("kmeans", {}), base_kmeans, where, f"{key}.kmeans")
    iteration = Iteration(number, target, n_clusters, max_update, init, config_path, overrides, kmeans)
    if init == PREVIOUS:
        _check_same_shape(iteration, previous[-1], where, key)
    return iteration


def _target(value, where, key, number) -> Target:
    if value == MFCC:
        return Target(MFCC)
    if isinstance(value, dict) and set(value) == {LAYER}:
        layer = _integer(value[LAYER], where, f"{key}.{LAYER}", minimum=1)
        if number == 1:
            raise ScheduleError(where(f"{key}.{LAYER}", "the first iteration has no previous model to take "
                                                        "layer features from; use 'target: mfcc'"))
        return Target(LAYER, layer)
    raise ScheduleError(where(key, f"must be 'mfcc' or {{layer: L}} (L = 1-based transformer block of the "
                                   f"previous iteration's model), found {value!r}"))


def _config_path(config: Any, where: _Where, key: str) -> str:
    if not isinstance(config, str) or not config:
        raise ScheduleError(where(key, f"must be a config name or a .yaml path, found {config!r}"))
    if config.endswith((".yaml", ".yml")):
        path = config if os.path.isabs(config) else os.path.join(os.path.dirname(where.path), config)
    else:
        path = os.path.join(CONFIG_DIR, f"{config}.yaml")
    if not os.path.isfile(path):
        available = sorted(name[:-5] for name in os.listdir(CONFIG_DIR) if name.endswith(".yaml"))
        raise ScheduleError(where(key, f"{path} not found; configs in {CONFIG_DIR}: {', '.join(available)}"))
    return os.path.abspath(path)


def _overrides(value: Any, where: _Where, key: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise ScheduleError(where(key, "must be a mapping of fairseq config keys to values, e.g. "
                                       "{optimization.lr: [0.0005]}"))
    for name, item in value.items():
        if not isinstance(name, str) or not _OVERRIDE_KEY.match(name):
            raise ScheduleError(where(f"{key}.{name}", "not a dotted fairseq config key like 'model.dropout'"))
        if name.lstrip("+") in DRIVER_KEYS:
            raise ScheduleError(where(f"{key}.{name}", "is set by the driver for every iteration; remove it "
                                                       "(use seed, n_clusters, max_update, init, target instead)"))
        if not _is_override_value(item):
            raise ScheduleError(where(f"{key}.{name}", f"must be a number, string, bool, null or a list of "
                                                       f"those, found {item!r}"))
    return dict(value)


def _is_override_value(value: Any) -> bool:
    if isinstance(value, list):
        return all(_is_override_value(item) and not isinstance(item, list) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _kmeans(value: Any, base: KmeansSettings, where: _Where, key: str) -> KmeansSettings:
    allowed = {f.name for f in fields(KmeansSettings)}
    _mapping(value, where, key, allowed)
    for name, item in value.items():
        expected = type(getattr(base, name))
        numeric = isinstance(item, (int, float)) and not isinstance(item, bool)
        if not numeric or (expected is int and not isinstance(item, int)) or item < 0:
            raise ScheduleError(where(f"{key}.{name}", f"must be a non-negative {expected.__name__}, found {item!r}"))
    settings = replace(base, **value)
    if not 0.0 < settings.sample_fraction <= 1.0:
        raise ScheduleError(where(f"{key}.sample_fraction", f"must be in (0, 1], found {settings.sample_fraction}"))
    if settings.batch_size < 1 or settings.n_init < 1 or settings.max_iter < 1:
        raise ScheduleError(where(key, "batch_size, n_init and max_iter must be >= 1"))
    return settings


def _analysis(value: Any, where: _Where) -> AnalysisSettings:
    allowed = {f.name for f in fields(AnalysisSettings)}
    _mapping(value, where, "analysis", allowed)
    settings = replace(AnalysisSettings(), **value)
    if not isinstance(settings.enabled, bool):
        raise ScheduleError(where("analysis.enabled", f"must be true or false, found {settings.enabled!r}"))
    if not isinstance(settings.split, str) or not re.match(r"^[A-Za-z0-9_.-]+$", settings.split):
        raise ScheduleError(where("analysis.split", f"must be a split name like 'valid', found {settings.split!r}"))
    if settings.max_utterances is not None:
        _integer(settings.max_utterances, where, "analysis.max_utterances", minimum=1)
    _integer(settings.seed, where, "analysis.seed", minimum=0)
    _integer(settings.probe_train_utterances, where, "analysis.probe_train_utterances", minimum=2)
    return settings


def _curve(value: Any, analysis: AnalysisSettings, where: _Where) -> CurveSettings:
    _mapping(value, where, "curve", {f.name for f in fields(CurveSettings)})
    settings = replace(CurveSettings(), **value)
    if settings.every is not None:
        _integer(settings.every, where, "curve.every", minimum=1)
        if not analysis.enabled:
            raise ScheduleError(where("curve.every", "the curve is the layer analysis along training; it needs "
                                                     "analysis.enabled: true (or remove curve)"))
    return settings


def _check_curve_keys(data: dict, where: _Where):
    """With a curve, the driver sets how often fairseq keeps checkpoints (``CURVE_KEYS``)."""
    places = [("overrides", data)] + [(f"iterations[{n}].overrides", entry)
                                      for n, entry in enumerate(data["iterations"], start=1)]
    for key, place in places:
        for name in place.get("overrides", {}):
            if name.lstrip("+") in CURVE_KEYS:
                raise ScheduleError(where(f"{key}.{name}", "is set by the driver when curve.every is set (a "
                                                           "checkpoint kept every curve.every updates); remove it"))


def _check_same_shape(iteration: Iteration, previous: Iteration, where: _Where, key: str):
    """A warm start copies the previous trunk: same config file and the same shape-deciding overrides."""
    if iteration.config_path != previous.config_path:
        raise ScheduleError(where(f"{key}.config", f"init: previous needs the previous iteration's config "
                                                   f"({previous.config_path}), found {iteration.config_path}"))
    for name in SHAPE_KEYS:
        mine, theirs = _lookup(iteration.overrides, name), _lookup(previous.overrides, name)
        if mine != theirs:
            raise ScheduleError(where(f"{key}.overrides.{name}", f"init: previous copies the previous model, so "
                                                                 f"its shape must not change ({theirs!r} -> {mine!r})"))


def _lookup(overrides: Dict[str, Any], name: str):
    for prefix in ("", "+", "++"):
        if prefix + name in overrides:
            return overrides[prefix + name]
    return None
