#!/usr/bin/env python
"""The CPU demo behind `make demo`: a real LASER run on the bundled corpus, start to finish.

1. builds a tiny random upstream in its original format (scripts/make_tiny_upstream.py),
2. fine-tunes its top 2 blocks with `fairseq-hydra-train` and examples/laser/config/demo.yaml on
   manifests/demo (a few minutes at most on 2 CPU cores),
3. prints a summary: first vs last training loss, validation loss, where checkpoints and logs are,
4. analyses the upstream layer by layer before vs after the fine-tune (scripts/analyze_layers.py).

Every run writes into a new folder outputs/demo/run-<timestamp> (or --run-dir); nothing is overwritten.

    python scripts/run_demo.py [--kind hubert|wavlm] [--max-update 40] [--run-dir DIR] [--skip-analysis]
"""

import argparse
import os
import re
import subprocess
import sys
import time
from typing import List, Optional, Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=["hubert", "wavlm"], default="hubert", help="tiny upstream to build")
    parser.add_argument("--max-update", type=int, default=40, help="LASER updates (default 40)")
    parser.add_argument("--run-dir", help="output folder (default: outputs/demo/run-<timestamp>); must not exist")
    parser.add_argument("--skip-analysis", action="store_true", help="stop after training and the summary")
    return parser.parse_args(argv)


def run(command: List[str], log_path: Optional[str] = None):
    """Run a command, echoing its output (and teeing it to ``log_path``); exit on failure."""
    print("+ " + " ".join(command), flush=True)
    with open(log_path, "w") if log_path else open(os.devnull, "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        if process.wait() != 0:
            sys.exit(f"demo failed: {command[0]} exited with {process.returncode}" + (f"; log: {log_path}" if log_path else ""))


def demo_train_command(upstream: str, run_dir: str, max_update: int, overrides=()) -> List[str]:
    """fairseq-hydra-train with examples/laser/config/demo.yaml on manifests/demo, writing into ``run_dir``."""
    return [
        os.path.join(os.path.dirname(sys.executable), "fairseq-hydra-train"),
        "--config-dir", os.path.join(REPO, "examples", "laser", "config"),
        "--config-name", "demo",
        f"common.user_dir={os.path.join(REPO, 'laser_fairseq')}",
        f"task.data={os.path.join(REPO, 'manifests', 'demo')}",
        f"model.upstream_path={upstream}",
        f"checkpoint.save_dir={os.path.join(run_dir, 'checkpoints')}",
        f"common.tensorboard_logdir={os.path.join(run_dir, 'tensorboard')}",
        f"hydra.run.dir={os.path.join(run_dir, 'hydra')}",
        f"optimization.max_update={max_update}",
        *overrides,
    ]


def logged_values(output: str, tag: str, key: str = "loss") -> List[Tuple[int, float]]:
    """[(num_updates, value)] of ``key`` from fairseq's simple-format log lines tagged ``tag``."""
    points = []
    for line in output.splitlines():
        if f"][{tag}][" not in line:
            continue
        update = re.search(r"num_updates[= ](\d+)", line)
        value = re.search(rf"\b{key}[= ]([-+0-9.eE]+|nan|inf)", line)
        if update and value:
            points.append((int(update.group(1)), float(value.group(1))))
    return points


def summarise(run_dir: str, log_path: str):
    with open(log_path) as log:
        output = log.read()
    train, valid = logged_values(output, "train_inner"), logged_values(output, "valid")
    print("\n=== LASER demo summary ===")
    if train:
        print(f"train loss: {train[0][1]:.3f} at update {train[0][0]} -> {train[-1][1]:.3f} at update {train[-1][0]}")
    if valid:
        print(f"valid loss: {valid[0][1]:.3f} at update {valid[0][0]} -> {valid[-1][1]:.3f} at update {valid[-1][0]}")
    print(f"checkpoints: {os.path.join(run_dir, 'checkpoints')} (checkpoint_last.pt, checkpoint_best.pt)")
    print(f"tensorboard: tensorboard --logdir {os.path.join(run_dir, 'tensorboard')}")
    print(f"training log: {log_path}")


def main(argv=None):
    args = parse_args(argv)
    run_dir = os.path.abspath(args.run_dir or os.path.join(REPO, "outputs", "demo", time.strftime("run-%Y%m%d-%H%M%S")))
    if os.path.exists(run_dir):
        sys.exit(f"error: {run_dir} exists; choose another --run-dir")
    os.makedirs(run_dir)
    python = sys.executable
    upstream = os.path.join(run_dir, f"tiny_{args.kind}.pt")
    run([python, "scripts/make_tiny_upstream.py", "--kind", args.kind, "--output", upstream])

    log_path = os.path.join(run_dir, "train.log")
    overrides = [f"lr_scheduler.total_num_update={args.max_update}"]
    run(demo_train_command(upstream, run_dir, args.max_update, overrides), log_path)
    summarise(run_dir, log_path)
    if args.skip_analysis:
        return
    analysis_dir = os.path.join(run_dir, "analysis")
    run(
        [
            python, "scripts/analyze_layers.py",
            "--checkpoint", upstream,
            "--compare", os.path.join(run_dir, "checkpoints", "checkpoint_last.pt"),
            "--manifest", os.path.join(REPO, "manifests", "demo", "valid.tsv"),
            "--out", analysis_dir,
        ]
    )
    print(f"\nlayer-wise analysis (before vs after LASER): {analysis_dir}")


if __name__ == "__main__":
    main()
