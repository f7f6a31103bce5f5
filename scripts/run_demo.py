#!/usr/bin/env python
"""The CPU demo behind `make demo`: a real LASER run on a pretrained tiny HuBERT, start to finish.

1. makes the synthetic speech corpus with frame phone labels (scripts/make_synthetic_corpus.py; kept in
   outputs/demo/corpus and reused by later runs made with the same settings),
2. fine-tunes the top 2 blocks of the upstream with `fairseq-hydra-train` and examples/laser/config/demo.yaml
   on the corpus' train split; the default upstream is the tiny HuBERT pretrained here on synthetic speech
   (examples/hubert_pretraining/tiny_progressive_hubert.pt, see examples/hubert_pretraining/README.md),
3. prints a summary: first vs last training loss, validation loss, where checkpoints and logs are,
4. analyses the upstream layer by layer before vs after the fine-tune on the held-out test sentences
   (scripts/analyze_layers.py, with the phone probe) and prints what changed in the trained blocks.

Every run writes into a new folder outputs/demo/run-<timestamp> (or --run-dir); nothing is overwritten.

    python scripts/run_demo.py [--upstream CKPT | --upstream random --kind hubert|wavlm] [--max-update 100]
        [--corpus DIR] [--run-dir DIR] [--skip-analysis]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from typing import List, Optional

from laser_fairseq.demo_training import demo_train_command, logged_values

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAINED_UPSTREAM = os.path.join(REPO, "examples", "hubert_pretraining", "tiny_progressive_hubert.pt")
DEMO_CORPUS = os.path.join(REPO, "outputs", "demo", "corpus")
# 60 sentences x 8 voices: 384 train, 48 valid, 48 test utterances (~10 s to synthesise on 2 cores). Seed 2:
# none of its sentences is in the corpus the committed tiny HuBERT was pretrained on (seed 1, 250 sentences);
# its voices are the same 8 (the first 8 of synthesis.VOICES), so only the sentences are new to the model.
CORPUS_SETTINGS = {"sentences": 60, "voices": 8, "seed": 2}
SUMMARY_MEASURES = [("phone_acc", "phone probe accuracy", "up"), ("phone_per", "phone error rate", "down"),
                    ("retrieval_map", "cross-voice retrieval MAP", "up"), ("invariance", "perturbation invariance", "up"),
                    ("voice_probe", "voice probe accuracy", "-")]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", default=PRETRAINED_UPSTREAM,
                        help="original HuBERT/WavLM checkpoint, or 'random' for a tiny random one made on the fly "
                             "(default: the committed tiny HuBERT pretrained on synthetic speech)")
    parser.add_argument("--kind", choices=["hubert", "wavlm"], default="hubert",
                        help="with --upstream random: which tiny upstream to build")
    parser.add_argument("--corpus", default=DEMO_CORPUS,
                        help="corpus folder (train/valid/test.tsv with .phn labels); made there when missing "
                             f"(default outputs/demo/corpus, {CORPUS_SETTINGS})")
    parser.add_argument("--max-update", type=int, default=100, help="LASER updates (default 100)")
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


def ensure_corpus(corpus: str):
    """Make the demo corpus in ``corpus`` unless a corpus with the demo's settings is already there."""
    record = os.path.join(corpus, "corpus.json")
    if os.path.exists(record):
        with open(record) as handle:
            settings = json.load(handle)["settings"]
        if corpus != DEMO_CORPUS or all(settings.get(key) == value for key, value in CORPUS_SETTINGS.items()):
            print(f"corpus: {corpus} (made before, reused)", flush=True)
            return
        sys.exit(f"error: {record} was made with other settings than the demo's {CORPUS_SETTINGS}; "
                 f"remove {corpus} or pass --corpus DIR")
    if os.path.exists(corpus) and os.listdir(corpus):
        sys.exit(f"error: {corpus} is neither empty nor a corpus (no corpus.json); remove it or pass --corpus DIR")
    command = [sys.executable, "scripts/make_synthetic_corpus.py", "--out", corpus]
    for key, value in CORPUS_SETTINGS.items():
        command += [f"--{key}", str(value)]
    run(command)


def print_changes(summary_path: str):
    """The trained blocks (the top 2) before vs after LASER, from analyze_layers' summary.json."""
    with open(summary_path) as handle:
        summary = json.load(handle)
    before, after = summary["main"]["layers"], summary["compare"]["layers"]
    print("\n=== what LASER changed in the trained blocks (held-out test sentences) ===")
    print(f"{'measure':<28}" + "".join(f"{layer['name'] + ' before':>16}{'after':>8}" for layer in before[-2:]))
    for key, title, better in SUMMARY_MEASURES:
        if before[-1].get(key) is None:
            continue
        cells = "".join(f"{b[key]:>16.3f}{a[key]:>8.3f}" for b, a in zip(before[-2:], after[-2:]))
        print(f"{title + (' (' + better + ')' if better != '-' else ''):<28}{cells}")
    chance = summary["main"].get("phone_acc_chance")
    if chance is not None:
        print(f"phone probe chance level (majority phone): {chance:.3f}")
    print("one run, one seed: examples/laser_effect/README.md has the same measures over seeds, with the ablations")


def main(argv=None):
    args = parse_args(argv)
    run_dir = os.path.abspath(args.run_dir or os.path.join(REPO, "outputs", "demo", time.strftime("run-%Y%m%d-%H%M%S")))
    if os.path.exists(run_dir):
        sys.exit(f"error: {run_dir} exists; choose another --run-dir")
    corpus = os.path.abspath(args.corpus)
    ensure_corpus(corpus)
    os.makedirs(run_dir)
    python = sys.executable
    if args.upstream == "random":
        upstream = os.path.join(run_dir, f"tiny_{args.kind}.pt")
        run([python, "scripts/make_tiny_upstream.py", "--kind", args.kind, "--output", upstream])
    else:
        upstream = os.path.abspath(args.upstream)
        if not os.path.isfile(upstream):
            sys.exit(f"error: --upstream {upstream} does not exist (pass a checkpoint, or 'random')")

    log_path = os.path.join(run_dir, "train.log")
    overrides = [f"lr_scheduler.total_num_update={args.max_update}"]
    run(demo_train_command(upstream, run_dir, args.max_update, overrides, data=corpus), log_path)
    summarise(run_dir, log_path)
    if args.skip_analysis:
        return
    analysis_dir = os.path.join(run_dir, "analysis")
    run(
        [
            python, "scripts/analyze_layers.py",
            "--checkpoint", upstream,
            "--compare", os.path.join(run_dir, "checkpoints", "checkpoint_last.pt"),
            "--manifest", os.path.join(corpus, "test.tsv"),
            "--out", analysis_dir,
        ]
    )
    print(f"\nlayer-wise analysis (before vs after LASER): {analysis_dir}")
    print_changes(os.path.join(analysis_dir, "summary.json"))


if __name__ == "__main__":
    main()
