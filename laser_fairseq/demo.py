"""The CPU demo behind `make demo`: a real LASER run on a pretrained tiny HuBERT, start to finish.

``run_demo`` does, each step in its own process where it runs a tool:

1. makes the synthetic speech corpus with frame phone labels (``synthetic_corpus.build_corpus`` with
   ``CORPUS_SETTINGS``; kept in outputs/demo/corpus and reused by later runs made with the same settings),
2. fine-tunes the top 2 blocks of the upstream with `fairseq-hydra-train` and examples/laser/config/demo.yaml
   on the corpus' train split (``demo_train_command``); the default upstream is the tiny HuBERT pretrained here
   on synthetic speech (examples/hubert_pretraining/tiny_standard_hubert.pt, the tiny_standard preset, seed 1;
   examples/hubert_pretraining/README.md),
3. prints a summary: first vs last training loss, validation loss, where checkpoints and logs are,
4. analyses the upstream layer by layer before vs after the fine-tune on the held-out test sentences
   (scripts/analyze_layers.py, with the phone probe) and prints what changed in the trained blocks.

Every run writes into a new folder outputs/demo/run-<timestamp> (or ``run_dir``); nothing is overwritten.
The front door is laser_fairseq/cli/run_demo.py (``make demo``, ``python scripts/run_demo.py``); docs/demo.md.
"""

import json
import math
import os
import re
import subprocess
import sys
import time
from typing import List, Optional, Sequence, Tuple

from .checkout import REPO
from .hydra_command import hydra_train_command, run_folder_overrides

PRETRAINED_UPSTREAM = os.path.join(REPO, "examples", "hubert_pretraining", "tiny_standard_hubert.pt")
DEMO_CORPUS = os.path.join(REPO, "outputs", "demo", "corpus")
DEMO_MANIFESTS = os.path.join(REPO, "manifests", "demo")  # the committed demo corpus (data/demo_corpus.py)
# 60 sentences x 8 voices: 384 train, 48 valid, 48 test utterances (~10 s to synthesise on 2 cores). Seed 2:
# none of its sentences is in the corpus the committed tiny HuBERT was pretrained on (seed 1, 250 sentences);
# its voices are the same 8 (the first 8 of synthesis.VOICES), so only the sentences are new to the model.
CORPUS_SETTINGS = {"sentences": 60, "voices": 8, "seed": 2}
# fairseq-hydra-train overrides of each precision a LASER run is checked in (check_laser_run, laser-gpu-check)
PRECISIONS = {"fp32": [], "fp16": ["common.fp16=true"], "bf16": ["common.bf16=true"], "amp": ["common.amp=true"]}
SUMMARY_MEASURES = [("phone_acc", "phone probe accuracy", "up"), ("phone_per", "phone error rate", "down"),
                    ("retrieval_map", "cross-voice retrieval MAP", "up"), ("invariance", "perturbation invariance", "up"),
                    ("voice_probe", "voice probe accuracy", "-")]


class DemoError(RuntimeError):
    """A demo step that cannot run or failed; the message says which and what to do."""


def run(command: List[str], log_path: Optional[str] = None):
    """Run a command in the repository, echoing its output (and teeing it to ``log_path``); DemoError on failure."""
    print("+ " + " ".join(command), flush=True)
    with open(log_path, "w") if log_path else open(os.devnull, "w") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
        if process.wait() != 0:
            raise DemoError(f"demo failed: {command[0]} exited with {process.returncode}"
                            + (f"; log: {log_path}" if log_path else ""))


def demo_train_command(upstream: str, run_dir: str, max_update: int, overrides: Sequence[str] = (),
                       data: Optional[str] = None) -> List[str]:
    """fairseq-hydra-train with examples/laser/config/demo.yaml on ``data`` (default manifests/demo), writing
    into ``run_dir``; ``overrides`` (``key=value``) come last."""
    keyed = {
        "task.data": data or DEMO_MANIFESTS,
        "model.upstream_path": upstream,
        **run_folder_overrides(run_dir),
        "optimization.max_update": max_update,
    }
    return hydra_train_command(os.path.join(REPO, "examples", "laser", "config"), "demo", keyed, overrides)


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
    """Print the first and last train and valid losses of the log and where the run's outputs are."""
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


def ensure_corpus(corpus: str, workers: int = min(2, os.cpu_count() or 1)):
    """Make the demo corpus in ``corpus`` unless a corpus with the demo's settings is already there.

    A corpus elsewhere than DEMO_CORPUS is used as it is; DemoError for a folder that is not a corpus or (in
    DEMO_CORPUS) one made with other settings.
    """
    from .data.synthetic_corpus import CorpusSettings, build_corpus  # torch, torchaudio: only when needed

    record = os.path.join(corpus, "corpus.json")
    if os.path.exists(record):
        with open(record) as handle:
            settings = json.load(handle)["settings"]
        if corpus != DEMO_CORPUS or all(settings.get(key) == value for key, value in CORPUS_SETTINGS.items()):
            print(f"corpus: {corpus} (made before, reused)", flush=True)
            return
        raise DemoError(f"{record} was made with other settings than the demo's {CORPUS_SETTINGS}; "
                        f"remove {corpus} or pass --corpus DIR")
    if os.path.exists(corpus) and os.listdir(corpus):
        raise DemoError(f"{corpus} is neither empty nor a corpus (no corpus.json); remove it or pass --corpus DIR")
    print(f"corpus: synthesising the demo corpus {CORPUS_SETTINGS} into {corpus}", flush=True)
    result = build_corpus(corpus, CorpusSettings(**CORPUS_SETTINGS), workers=workers)
    print(f"wrote {result.utterances} utterances to {result.out} in {result.seconds:.1f} s", flush=True)


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


def new_run_dir() -> str:
    """outputs/demo/run-<timestamp> (second resolution) of the repository."""
    return os.path.join(REPO, "outputs", "demo", time.strftime("run-%Y%m%d-%H%M%S"))


def run_demo(upstream: str = PRETRAINED_UPSTREAM, kind: str = "hubert", corpus: str = DEMO_CORPUS,
             max_update: int = 100, run_dir: Optional[str] = None, skip_analysis: bool = False):
    """The whole demo (module doc); ``upstream`` is a checkpoint or "random" (a tiny random ``kind`` upstream).

    DemoError when ``run_dir`` exists, ``upstream`` is missing, the corpus folder cannot be used or a step fails.
    """
    run_dir = os.path.abspath(run_dir or new_run_dir())
    if os.path.exists(run_dir):
        raise DemoError(f"{run_dir} exists; choose another --run-dir")
    if upstream != "random":
        upstream = os.path.abspath(upstream)
        if not os.path.isfile(upstream):
            raise DemoError(f"--upstream {upstream} does not exist (pass a checkpoint, or 'random')")
    corpus = os.path.abspath(corpus)
    ensure_corpus(corpus)
    os.makedirs(run_dir)
    python = sys.executable
    if upstream == "random":
        upstream = os.path.join(run_dir, f"tiny_{kind}.pt")
        run([python, "-m", "laser_fairseq.cli.make_tiny_upstream", "--kind", kind, "--output", upstream])

    log_path = os.path.join(run_dir, "train.log")
    overrides = [f"lr_scheduler.total_num_update={max_update}"]
    run(demo_train_command(upstream, run_dir, max_update, overrides, data=corpus), log_path)
    summarise(run_dir, log_path)
    if skip_analysis:
        return
    analysis_dir = os.path.join(run_dir, "analysis")
    run(
        [
            python, "-m", "laser_fairseq.cli.analyze_layers",
            "--checkpoint", upstream,
            "--compare", os.path.join(run_dir, "checkpoints", "checkpoint_last.pt"),
            "--manifest", os.path.join(corpus, "test.tsv"),
            "--out", analysis_dir,
        ]
    )
    print(f"\nlayer-wise analysis (before vs after LASER): {analysis_dir}")
    print_changes(os.path.join(analysis_dir, "summary.json"))


def check_laser_run(upstream: str, run_dir: str, precision: str, device_type: str, updates: int) -> list[tuple]:
    """A real LASER run on the demo corpus, then export + reload -> [(check, ok, detail)].

    ``precision``: fp32, fp16, bf16 or amp (see PRECISIONS); ``device_type``: cpu or cuda.
    """
    import torch

    from .checkpoint_io import load_checkpoint
    from .export import export_checkpoint
    from .models.trained_upstream import open_upstream

    overrides = PRECISIONS[precision] + [
        f"common.cpu={device_type == 'cpu'}", "common.log_interval=1", f"lr_scheduler.total_num_update={updates}",
        f"checkpoint.save_interval_updates={updates}", f"dataset.validate_interval_updates={updates}"]
    proc = subprocess.run(demo_train_command(upstream, run_dir, updates, overrides), cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    with open(os.path.join(run_dir, "train.log"), "w") as log:
        log.write(proc.stdout)
    if proc.returncode != 0:
        return [("training", False, f"fairseq-hydra-train exited {proc.returncode}: {proc.stdout[-300:]!r}")]
    losses = [v for _, v in logged_values(proc.stdout, "train_inner")]
    head = min(5, len(losses) // 2)
    falling = len(losses) >= 2 and sum(losses[-head:]) < sum(losses[:head])
    results = [("loss finite and falling", len(losses) == updates and all(map(math.isfinite, losses)) and falling,
                f"{len(losses)} updates, first {losses[0]:.3f} -> last {losses[-1]:.3f} (means of {head}: "
                f"{sum(losses[:head]) / head:.3f} -> {sum(losses[-head:]) / head:.3f})" if losses else "no loss logged")]
    checkpoint = os.path.join(run_dir, "checkpoints", "checkpoint_last.pt")
    state = load_checkpoint(checkpoint)["model"]
    original = load_checkpoint(upstream)["model"]
    layers = 1 + max(int(k.split(".")[2]) for k in original if k.startswith("encoder.layers."))
    trained = tuple(f"encoder.layers.{i}." for i in range(layers - 2, layers))
    frozen = [k for k in original if not k.startswith(trained)]
    rounding = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    kept = [k for k in frozen if torch.equal(state["upstream.model." + k], original[k].to(rounding).float())]
    moved = [k for k in original if k.startswith(trained) and not torch.equal(state["upstream.model." + k], original[k])]
    results.append(("frozen tensors unchanged", len(kept) == len(frozen) and moved,
                    f"{len(kept)}/{len(frozen)} frozen tensors equal the original rounded to {rounding} in the "
                    f"checkpoint; {len(moved)} tensors of the top 2 blocks trained"))
    exported = os.path.join(run_dir, "exported.pt")
    report = export_checkpoint(checkpoint, exported)
    reloaded = open_upstream(exported).upstream.original_state_dict()
    identical = [k for k in frozen if reloaded[k].dtype == original[k].dtype and torch.equal(reloaded[k], original[k])]
    results.append(("export + reload", len(identical) == len(frozen),
                    f"export verified ({report.changed_tensors} tensors changed by training); reloaded, "
                    f"{len(identical)}/{len(frozen)} frozen tensors bit-identical to the original"))
    return results
