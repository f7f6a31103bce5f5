"""Iterative HuBERT pretraining with fairseq's own hubert_pretraining task and hubert model.

For every iteration of the schedule: dump target features (MFCC or a layer of the previous iteration's
model, in shards), fit k-means, write frame labels (+ their cluster quality against .phn phone labels),
train with fairseq-hydra-train, analyse the new model layer by layer. RUN_DIR/summary.json lists every
iteration's checkpoint and measures; RUN_DIR/report.{md,csv,png} show them.

    python scripts/pretrain_hubert.py --schedule examples/hubert_pretraining/tiny_progressive.yaml \\
        --data DATA_DIR --out outputs/pretrain/tiny_progressive

Re-running the same command skips finished stages and resumes an interrupted one (training continues from
checkpoint_last.pt). Changed settings are refused unless the stage is named in --force-stage, which redoes
it and every stage after it that reads its outputs. Stage names: data, iter<i>.features, iter<i>.kmeans,
iter<i>.labels, iter<i>.train, iter<i>.analysis, iter<i>.curve (with curve.every), random.analysis.

Feature dumping on several processes / GPUs: once the stage before iteration i's features is done (e.g.
run with --stop-after iter1.train), start one process per shard with --iteration i --shard K (K < the
schedule's feature_shards), then run the plain command again; finished shards are not redone.
"""

import argparse
import dataclasses
import logging
import os
import sys

from laser_fairseq.checkpoint_io import CheckpointError
from laser_fairseq.data.audio import AudioError
from laser_fairseq.data.manifest import ManifestError
from laser_fairseq.pretraining.driver import Driver
from laser_fairseq.pretraining.features import FeatureError
from laser_fairseq.pretraining.run_data import DataError
from laser_fairseq.pretraining.schedule import ScheduleError, load_schedule
from laser_fairseq.pretraining.stamps import StageError
from laser_fairseq.pretraining.training import TrainingError

ERRORS = (ScheduleError, StageError, DataError, FeatureError, TrainingError, ManifestError, AudioError,
          CheckpointError, FileNotFoundError, ValueError)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedule", required=True, help="schedule YAML (presets: examples/hubert_pretraining/)")
    parser.add_argument("--data", required=True,
                        help="corpus folder with train.tsv and valid.tsv manifests (+ .phn, .voice, .sent side files)")
    parser.add_argument("--out", required=True, help="run directory (created; re-use it to resume)")
    parser.add_argument("--force-stage", nargs="+", default=[], metavar="STAGE",
                        help="redo these stages (and the stages after them that read their outputs)")
    parser.add_argument("--stop-after", metavar="STAGE", help="stop once this stage is done")
    parser.add_argument("--iteration", type=int, help="with --shard: the iteration whose features to dump")
    parser.add_argument("--shard", type=int, metavar="K",
                        help="dump only feature shard K (0-based) of --iteration, then exit")
    parser.add_argument("--seed", type=int, metavar="N",
                        help="replace the schedule's seed (another seed of the same schedule: use another --out)")
    parser.add_argument("--device", default="cpu", help="device for feature dumping and analysis (cpu, cuda, cuda:1)")
    args = parser.parse_args(argv)
    if (args.shard is None) != (args.iteration is None):
        parser.error("--shard and --iteration go together")
    return args


def main(argv=None):
    args = parse_args(argv)
    quiet_library_logging()
    try:
        schedule = load_schedule(args.schedule)
        if args.seed is not None:
            schedule = dataclasses.replace(schedule, seed=args.seed,
                                           text=f"{schedule.text.rstrip()}\n# run with --seed {args.seed}\n")
        driver = Driver(schedule, args.data, args.out, args.force_stage, args.stop_after, args.device,
                        echo=lambda line: print(line, flush=True))
        if args.shard is not None:
            dump_one_shard(driver, schedule, args.iteration, args.shard)
        else:
            driver.run()
    except ERRORS as error:
        sys.exit(f"error: {error}")
    except KeyboardInterrupt as stop:
        sys.exit(f"interrupted: {stop}")
    if args.shard is None:
        print(f"summary: {os.path.join(os.path.abspath(args.out), 'summary.json')}")


def dump_one_shard(driver: Driver, schedule, iteration_number: int, shard: int):
    if not 1 <= iteration_number <= len(schedule.iterations):
        raise ScheduleError(f"--iteration {iteration_number}: the schedule has iterations 1..{len(schedule.iterations)}")
    if not 0 <= shard < schedule.feature_shards:
        raise ScheduleError(f"--shard {shard}: the schedule's feature_shards is {schedule.feature_shards} "
                            f"(shards 0..{schedule.feature_shards - 1})")
    driver.features_stage(schedule.iterations[iteration_number - 1], only_rank=shard)


def quiet_library_logging():
    """Importing fairseq sets the root logger to DEBUG; keep the terminal for this script's own output."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("laser_fairseq").setLevel(logging.INFO)


if __name__ == "__main__":
    main()
