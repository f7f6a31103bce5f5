"""The pretraining driver: runs a schedule's stages in order, each skipped, resumed or run (see ``stamps``).

Run directory layout::

    RUN/schedule.yaml                the schedule of the last run that got through its stages
    RUN/data/                        stage "data": manifests with absolute roots + side files
    RUN/iter<i>/features/            stage "iter<i>.features": {split}_{rank}_{nshard}.npy / .len
    RUN/iter<i>/kmeans/              stage "iter<i>.kmeans": centroids.npy, kmeans.json
    RUN/iter<i>/labels/              stage "iter<i>.labels": {split}.km, dict.km.txt, quality.json
    RUN/iter<i>/train/               stage "iter<i>.train": checkpoints/, train.log, init.pt, model.pt
    RUN/iter<i>/analysis/            stage "iter<i>.analysis": analysis.json, layers.csv, layers.md
    RUN/iter<i>/curve/u<updates>/    stage "iter<i>.curve" (with curve.every): the analysis of the checkpoint
                                     kept at <updates> (see ``curve``)
    RUN/random/analysis/             stage "random.analysis": a random model shaped like iteration 1's, and the
                                     phone probe on the inputs (log-mel, MFCC)
    RUN/summary.json, RUN/report.*   rewritten after every iteration (see ``report``)
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict
from typing import Callable, List, Optional

import numpy as np

from ..data.manifest import read_manifest
from ..files import sha256_of, write_json, write_text
from . import cluster_quality, curve, features, kmeans, report, run_data, training
from .layer_analysis import ANALYSIS_JSON, LAYERS_CSV, LAYERS_MD, analyze_checkpoint, write_random_model
from .schedule import LAYER, PREVIOUS, Iteration, Schedule
from .stamps import RESUME, RUN, SKIP, Stage, StageBook, StageError, run_id_of

logger = logging.getLogger(__name__)

ITERATION_STAGES = ("features", "kmeans", "labels", "train", "analysis", "curve")
MODEL = "model.pt"
INIT = "init.pt"
TRAIN_LOG = "train.log"
RANDOM = "random"


class StopRequested(Exception):
    """--stop-after reached."""


def iteration_stages(schedule: Schedule) -> List[str]:
    """The stages each iteration of ``schedule`` runs, in order."""
    skipped = {"analysis", "curve"} if not schedule.analysis.enabled else set()
    if schedule.curve.every is None:
        skipped.add("curve")
    return [stage for stage in ITERATION_STAGES if stage not in skipped]


def stage_names(schedule: Schedule) -> List[str]:
    """Every stage of a schedule, in run order."""
    names = ["data"]
    for iteration in schedule.iterations:
        names += [f"{iteration.name}.{stage}" for stage in iteration_stages(schedule)]
    if schedule.analysis.enabled:
        names.append(f"{RANDOM}.analysis")
    return names


class Driver:
    """Runs the stages of ``schedule`` on the corpus in ``data_dir`` into ``run_dir``; ``echo`` gets one line
    per stage event and fairseq's progress lines."""

    def __init__(self, schedule: Schedule, data_dir: str, run_dir: str, force: List[str] = (),
                 stop_after: Optional[str] = None, device: str = "cpu", echo: Callable[[str], None] = print):
        names = stage_names(schedule)
        for name in [*force, *([stop_after] if stop_after else [])]:
            if name not in names:
                raise StageError(f"unknown stage {name!r}; the stages of this schedule are: {', '.join(names)}")
        self.schedule = schedule
        self.data_source = os.path.abspath(data_dir)
        self.run_dir = os.path.abspath(run_dir)
        self.book = StageBook(force)
        self.stop_after = stop_after
        self.device = device
        self.echo = echo
        self.worked = False  # whether a stage ran or resumed in this run (not only skips)

    # ------------------------------------------------------------------------------------------ layout
    @property
    def data_dir(self) -> str:
        return os.path.join(self.run_dir, "data")

    def stage_dir(self, iteration_name: str, stage: str) -> str:
        return os.path.join(self.run_dir, iteration_name, stage)

    def model_path(self, iteration: Iteration) -> str:
        return os.path.join(self.stage_dir(iteration.name, "train"), MODEL)

    @property
    def splits(self) -> List[str]:
        return run_data.used_splits(self.schedule.analysis.split)

    # ------------------------------------------------------------------------------------------ running
    def run(self):
        """All stages in order; the report after every iteration. Returns normally at --stop-after."""
        os.makedirs(self.run_dir, exist_ok=True)
        try:
            self.data_stage()
            for iteration in self.schedule.iterations:
                for stage in iteration_stages(self.schedule):
                    getattr(self, f"{stage}_stage")(iteration)
                if self.worked:  # a re-run refused later (changed settings) leaves the run's report as it was
                    self.write_report()
            if self.schedule.analysis.enabled:
                self.random_analysis_stage()
        except StopRequested:
            self.echo(f"stopped after {self.stop_after} (--stop-after); re-run without it to continue")
        write_text(os.path.join(self.run_dir, "schedule.yaml"), self.schedule.text)
        self.write_report()

    def _begin(self, stage: Stage) -> str:
        decision = self.book.begin(stage)
        self.worked = self.worked or decision != SKIP
        verb = {SKIP: "done before, skipped", RESUME: "resuming", RUN: "running"}[decision]
        self.echo(f"[{stage.name}] {verb}")
        return decision

    def _finish(self, stage: Stage, outputs: List[str], record: Optional[dict] = None):
        stamp = self.book.finish(stage, outputs, record)
        self.echo(f"[{stage.name}] finished in {stamp['seconds']:.1f} s")
        self._maybe_stop(stage)

    def _maybe_stop(self, stage: Stage):
        if stage.name == self.stop_after:
            raise StopRequested()

    # ------------------------------------------------------------------------------------------ stages
    def data_stage(self):
        names = run_data.source_files(self.data_source, self.splits)
        stage = Stage("data", self.data_dir,
                      {"source": self.data_source, "files": run_data.file_digests(self.data_source, names)}, {})
        if self._begin(stage) == SKIP:
            return self._maybe_stop(stage)
        written = run_data.write_run_data(self.data_source, names, self.data_dir)
        self._finish(stage, written)

    def features_stage(self, iteration: Iteration, only_rank: Optional[int] = None):
        stage = self._features_stage(iteration)
        decision = self._begin(stage)
        if decision == SKIP:
            return self._maybe_stop(stage)
        reader = self._feature_reader(iteration)
        nshard = self.schedule.feature_shards
        ranks = range(nshard) if only_rank is None else [only_rank]
        for split in self.splits:
            manifest = read_manifest(os.path.join(self.data_dir, f"{split}.tsv"))
            for rank in ranks:
                if features.shard_done(stage.directory, split, rank, nshard):
                    continue
                self.echo(f"[{stage.name}] {split} shard {rank + 1}/{nshard}")
                features.dump_shard(reader, manifest, split, rank, nshard, stage.directory)
        if only_rank is not None:
            return
        outputs = [os.path.basename(path) for split in self.splits for rank in range(nshard)
                   for path in features.shard_paths(stage.directory, split, rank, nshard)]
        self._finish(stage, outputs, {"dim": reader.dim, "rate": reader.rate})

    def _features_stage(self, iteration: Iteration) -> Stage:
        target = iteration.target
        inputs = {"data": run_id_of(self.data_dir, "data")}
        if target.kind == LAYER:
            previous = f"iter{iteration.index - 1}"
            inputs[f"{previous}.train"] = run_id_of(self.stage_dir(previous, "train"), f"{previous}.train")
        settings = {"target": target.describe(), "shards": self.schedule.feature_shards, "splits": self.splits}
        return Stage(f"{iteration.name}.features", self.stage_dir(iteration.name, "features"), settings, inputs)

    def _feature_reader(self, iteration: Iteration):
        if iteration.target.kind != LAYER:
            return features.MfccReader()
        previous = self.schedule.iterations[iteration.index - 2]
        try:
            return features.HubertLayerReader(self.model_path(previous), iteration.target.layer, self.device)
        except features.FeatureError as error:
            raise StageError(f"{self.schedule.path}: iterations[{iteration.index}].target.layer: {error}") from None

    def kmeans_stage(self, iteration: Iteration):
        feature_dir = self.stage_dir(iteration.name, "features")
        stage = Stage(
            f"{iteration.name}.kmeans", self.stage_dir(iteration.name, "kmeans"),
            {"n_clusters": iteration.n_clusters, "kmeans": asdict(iteration.kmeans), "seed": self.schedule.seed},
            {f"{iteration.name}.features": run_id_of(feature_dir, f"{iteration.name}.features")},
        )
        if self._begin(stage) == SKIP:
            return self._maybe_stop(stage)
        frames, utterances = kmeans.sample_frames(feature_dir, "train", self.schedule.feature_shards,
                                                  iteration.kmeans.sample_fraction, self.schedule.seed)
        self.echo(f"[{stage.name}] MiniBatchKMeans, {iteration.n_clusters} clusters, {len(frames)} frames of "
                  f"{utterances} utterances")
        fit = kmeans.fit_kmeans(frames, iteration.n_clusters, iteration.kmeans, self.schedule.seed)
        np.save(os.path.join(stage.directory, "centroids.npy"), fit.centroids)
        record = {"inertia": fit.inertia, "frames": len(frames), "utterances": utterances,
                  "fit_seconds": round(fit.seconds, 3), "library": "scikit-learn MiniBatchKMeans"}
        write_json(os.path.join(stage.directory, "kmeans.json"), record)
        self._finish(stage, ["centroids.npy", "kmeans.json"], record)

    def labels_stage(self, iteration: Iteration):
        names = {name: self.stage_dir(iteration.name, name) for name in ("features", "kmeans")}
        inputs = {f"{iteration.name}.{name}": run_id_of(path, f"{iteration.name}.{name}") for name, path in names.items()}
        inputs["data"] = run_id_of(self.data_dir, "data")
        stage = Stage(f"{iteration.name}.labels", self.stage_dir(iteration.name, "labels"),
                      {"label_rate": iteration.target.label_rate}, inputs)
        if self._begin(stage) == SKIP:
            return self._maybe_stop(stage)
        centroids = np.load(os.path.join(names["kmeans"], "centroids.npy"))
        outputs, quality = [], {}
        for split in self.splits:
            lines = kmeans.label_lines(names["features"], split, self.schedule.feature_shards, centroids)
            write_text(os.path.join(stage.directory, f"{split}.km"), "".join(f"{line}\n" for line in lines))
            outputs.append(f"{split}.km")
            phones = os.path.join(self.data_dir, f"{split}.phn")
            if os.path.isfile(phones):
                clusters = [[int(k) for k in line.split()] for line in lines]
                measured = cluster_quality.cluster_quality(
                    cluster_quality.read_phone_lines(phones, len(lines)), clusters, iteration.target.label_rate)
                quality[split] = measured.as_dict()
        write_text(os.path.join(stage.directory, "dict.km.txt"), kmeans.dictionary_text(iteration.n_clusters))
        write_json(os.path.join(stage.directory, "quality.json"), quality)
        if quality:
            shown = quality.get("valid") or next(iter(quality.values()))
            self.echo(f"[{stage.name}] cluster quality: PNMI {shown['pnmi']:.3f}, phone purity "
                      f"{shown['phone_purity']:.3f}, cluster purity {shown['cluster_purity']:.3f}")
        self._finish(stage, [*outputs, "dict.km.txt", "quality.json"], {"quality": quality})

    def train_stage(self, iteration: Iteration):
        label_dir = self.stage_dir(iteration.name, "labels")
        inputs = {f"{iteration.name}.labels": run_id_of(label_dir, f"{iteration.name}.labels"),
                  "data": run_id_of(self.data_dir, "data")}
        if iteration.init == PREVIOUS:
            previous = f"iter{iteration.index - 1}"
            inputs[f"{previous}.train"] = run_id_of(self.stage_dir(previous, "train"), f"{previous}.train")
        settings = {
            "config": os.path.basename(iteration.config_path),
            "config_sha256": sha256_of(iteration.config_path),
            "overrides": iteration.overrides,
            "max_update": iteration.max_update,
            "init": iteration.init,
            "seed": self.schedule.seed,
            "label_rate": iteration.target.label_rate,
        }
        if self.schedule.curve.every is not None:  # only then: stamps of runs without a curve stay as they were
            settings["keep_every"] = self.schedule.curve.every
        stage = Stage(f"{iteration.name}.train", self.stage_dir(iteration.name, "train"), settings, inputs)
        if self._begin(stage) == SKIP:
            return self._maybe_stop(stage)
        save_dir = os.path.join(stage.directory, "checkpoints")
        init = None
        if iteration.init == PREVIOUS:
            init = os.path.join(stage.directory, INIT)
            if not os.path.isfile(init):
                previous_model = self.model_path(self.schedule.iterations[iteration.index - 2])
                training.write_init_checkpoint(previous_model, os.path.join(label_dir, "dict.km.txt"),
                                               iteration.target.label_rate, self.schedule.seed, init)
        command = training.train_command(
            iteration, self.schedule.seed, self.data_dir, label_dir, save_dir,
            os.path.join(stage.directory, "hydra"), training.start_overrides(save_dir, init),
            keep_every=self.schedule.curve.every,
        )
        log_path = os.path.join(stage.directory, TRAIN_LOG)
        self.echo(f"[{stage.name}] fairseq-hydra-train, {iteration.max_update} updates; log: {log_path}")
        training.run_training(command, log_path, echo=self._echo_training)
        updates = training.export_final_model(save_dir, iteration.max_update, self.model_path(iteration))
        self._finish(stage, [MODEL], {"updates": updates, "log": log_path,
                                      "valid": training.last_valid_metrics(log_path)})

    def _echo_training(self, line: str):
        """fairseq's progress lines (hydra's log format tags them ``[train_inner]``, ``[valid]``, ``[train]``)."""
        if any(tag in line for tag in ("][train_inner][", "][valid][", "][train][", "Traceback", "Error")):
            self.echo("    " + line.rstrip())

    def analysis_stage(self, iteration: Iteration):
        train_dir = self.stage_dir(iteration.name, "train")
        inputs = {f"{iteration.name}.train": run_id_of(train_dir, f"{iteration.name}.train"),
                  "data": run_id_of(self.data_dir, "data")}
        stage = Stage(f"{iteration.name}.analysis", self.stage_dir(iteration.name, "analysis"),
                      asdict(self.schedule.analysis), inputs)
        if self._begin(stage) == SKIP:
            return self._maybe_stop(stage)
        analyze_checkpoint(self.model_path(iteration), self.data_dir, self.schedule.analysis, self.device,
                           iteration.name, stage.directory)
        self._finish(stage, [ANALYSIS_JSON, LAYERS_CSV, LAYERS_MD])

    def curve_stage(self, iteration: Iteration):
        train_dir = self.stage_dir(iteration.name, "train")
        inputs = {f"{iteration.name}.train": run_id_of(train_dir, f"{iteration.name}.train"),
                  "data": run_id_of(self.data_dir, "data")}
        stage = Stage(f"{iteration.name}.curve", self.stage_dir(iteration.name, "curve"),
                      dict(asdict(self.schedule.analysis), every=self.schedule.curve.every), inputs)
        if self._begin(stage) == SKIP:
            return self._maybe_stop(stage)
        curve.remove_leftovers(stage.directory)
        updates = curve.point_updates(iteration.max_update, self.schedule.curve.every)
        for done, point in enumerate(updates, start=1):
            directory = curve.point_dir(stage.directory, point)
            if curve.point_done(directory):
                continue
            self.echo(f"[{stage.name}] analysing the checkpoint at {point} updates ({done}/{len(updates)})")
            curve.analyze_point(os.path.join(train_dir, "checkpoints"), point, self.data_dir, self.schedule.analysis,
                                self.device, f"{iteration.name}@{point}", directory)
        outputs = [os.path.join(os.path.basename(curve.point_dir(stage.directory, point)), name)
                   for point in updates for name in curve.POINT_FILES]
        self._finish(stage, outputs, {"points": updates})

    def random_analysis_stage(self):
        first = self.schedule.iterations[0]
        train_dir = self.stage_dir(first.name, "train")
        inputs = {f"{first.name}.train": run_id_of(train_dir, f"{first.name}.train"),
                  "data": run_id_of(self.data_dir, "data")}
        stage = Stage(f"{RANDOM}.analysis", self.stage_dir(RANDOM, "analysis"),
                      dict(asdict(self.schedule.analysis), model_seed=self.schedule.seed), inputs)
        if self._begin(stage) == SKIP:
            return self._maybe_stop(stage)
        model = os.path.join(stage.directory, MODEL)
        write_random_model(self.model_path(first), self.schedule.seed, model)
        analyze_checkpoint(model, self.data_dir, self.schedule.analysis, self.device, RANDOM, stage.directory,
                           with_inputs=True)
        self._finish(stage, [MODEL, ANALYSIS_JSON, LAYERS_CSV, LAYERS_MD])

    # ------------------------------------------------------------------------------------------ report
    def write_report(self):
        summary = report.collect_run(self.run_dir, self.schedule, self.stage_dir, self.model_path)
        report.write_run_report(self.run_dir, summary)
