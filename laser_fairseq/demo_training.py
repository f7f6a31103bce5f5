"""The demo's LASER training run: its ``fairseq-hydra-train`` command (examples/laser/config/demo.yaml), the
values fairseq logs, and the checks of a finished run that ``laser-gpu-check`` makes in every precision.

Shared by ``make demo`` (scripts/run_demo.py), ``laser-gpu-check`` and the tests that train (tests/laser_runs.py).
"""

import math
import os
import re
import subprocess
from typing import List, Optional, Tuple

from laser_fairseq.hydra_command import hydra_train_command, run_folder_overrides

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# fairseq-hydra-train overrides of each precision a LASER run is checked in
PRECISIONS = {"fp32": [], "fp16": ["common.fp16=true"], "bf16": ["common.bf16=true"], "amp": ["common.amp=true"]}


def demo_train_command(upstream: str, run_dir: str, max_update: int, overrides=(), data: Optional[str] = None) -> List[str]:
    """fairseq-hydra-train with examples/laser/config/demo.yaml on ``data`` (default manifests/demo), writing
    into ``run_dir``."""
    keyed = {
        "task.data": data or os.path.join(REPO, "manifests", "demo"),
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


def check_laser_run(upstream: str, run_dir: str, precision: str, device_type: str, updates: int) -> list[tuple]:
    """A real LASER run on the demo corpus, then export + reload -> [(check, ok, detail)].

    ``precision``: fp32, fp16, bf16 or amp (see PRECISIONS); ``device_type``: cpu or cuda.
    """
    import torch

    from laser_fairseq.checkpoint_io import load_checkpoint
    from laser_fairseq.export import export_checkpoint
    from laser_fairseq.models.trained_upstream import open_upstream

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
