"""Stopping a LASER run cleanly on a signal, and not training a finished run again, with fairseq's own stops.

SLURM warns a job before its time limit with a signal (``#SBATCH --signal=B:USR1@600``, forwarded to the
training by ``examples/laser/slurm/laser.sbatch``). A training process of the ``laser`` task handles the
signals of ``task.stop_signals`` by recording them, nothing else (a signal handler runs between two Python
bytecodes, anywhere in the trainer). At the start of each forward pass (``StopSignals.check``, called by
the task's ``train_step`` on every rank the same number of times) the ranks agree by an all-reduce (sum)
of their flags over fairseq's data-parallel group; when any rank received a signal, every rank sets the
run's ``optimization.stop_time_hours`` to ``STOP_NOW_HOURS``. fairseq's own stopping condition
(``fairseq_cli.train.validate_and_save``: cumulative training time above ``stop_time_hours``, a time the
ranks share) then ends the run after that update on every rank at once: it validates (unless
``dataset.disable_validation``), saves checkpoint_last.pt and exits with status 0. Running the same command
resumes from that checkpoint, bit-identical to a run never stopped (``tests/test_slurm.py``).

A relaunch of a run whose checkpoint_last.pt already holds ``optimization.max_update`` updates (e.g. a
requeue that came after the end) would otherwise train one update more: fairseq only checks max_update
after an update. ``train_nothing`` sets the run's ``optimization.max_epoch`` to -1, so fairseq's epoch
loop (``while next_epoch_idx <= max_epoch``) is never entered and the run ends without touching a file.

Both work on the run's config, the root of the task's config (fairseq's ``merge_with_parent`` keeps the
task config's parent, the config object ``fairseq_cli.train`` reads): fairseq itself is not patched. The
checkpoint saved on a signal records ``stop_time_hours`` = STOP_NOW_HOURS in its ``cfg``; a resumed run
takes its config from its command line, never from the checkpoint.
"""

import logging
import signal
import threading
from typing import List, Optional, Sequence

import torch
from omegaconf import DictConfig

logger = logging.getLogger(__name__)

STOP_NOW_HOURS = 1e-9  # 3.6 microseconds: below any run's cumulative training time after its first update
UNCATCHABLE = ("SIGKILL", "SIGSTOP")


class StopSignalError(ValueError):
    """``task.stop_signals`` names something that is not a signal a process can handle."""


def parse_signals(names: Sequence[str]) -> List[signal.Signals]:
    """``["USR1", "SIGTERM", ...]`` -> signals; the SIG prefix and the case are optional."""
    parsed = []
    for name in names:
        canonical = str(name).strip().upper()
        canonical = canonical if canonical.startswith("SIG") else f"SIG{canonical}"
        if canonical in UNCATCHABLE or canonical not in signal.Signals.__members__:
            raise StopSignalError(
                f"task.stop_signals: {name!r} is not a signal a process can handle; use names such as SIGUSR1, "
                f"SIGUSR2, SIGTERM or SIGINT (SIGKILL and SIGSTOP cannot be handled), or [] for none"
            )
        parsed.append(signal.Signals[canonical])
    return parsed


def run_config(task_cfg) -> Optional[DictConfig]:
    """The whole run's config (the one fairseq_cli.train reads) above a task config; None when the task config
    stands alone (built in Python, not by fairseq-hydra-train)."""
    node = task_cfg if isinstance(task_cfg, DictConfig) else None
    root = None
    while node is not None:
        root = node
        node = node._get_parent()
    if root is None or root is task_cfg or "optimization" not in root:
        return None
    return root


class StopSignals:
    """Records ``signals`` in the training process and turns them into fairseq's stop at an update boundary."""

    def __init__(self, signals: Sequence[signal.Signals], run_cfg: DictConfig):
        self.signals = list(signals)
        self.run_cfg = run_cfg
        self.received: Optional[int] = None
        self.stopping = False

    def install(self) -> "StopSignals":
        """Handle the signals in this process (from its main thread, as fairseq's trainer runs)."""
        if threading.current_thread() is not threading.main_thread():
            logger.warning(f"task.stop_signals: not in the main thread, {self.names()} are not handled")
            return self
        for sig in self.signals:
            signal.signal(sig, self._record)
        if self.signals:
            logger.info(f"{self.names()}: save a checkpoint after the current update and stop "
                        f"(task.stop_signals; run the same command to resume)")
        return self

    def names(self) -> str:
        return ", ".join(sig.name for sig in self.signals)

    def _record(self, signum, frame):  # only a flag: anything more could run inside the trainer's code
        self.received = signum

    def check(self, update_num: int) -> bool:
        """Called before each forward pass on every rank; True once the run was asked to stop after this update."""
        if self.stopping:
            return True
        requested = self.received is not None
        if _distributed():
            flag = torch.tensor([1.0 if requested else 0.0], device=_collective_device())
            from fairseq.distributed import utils as distributed_utils

            distributed_utils.all_reduce(flag, group=distributed_utils.get_data_parallel_group())
            requested = flag.item() > 0
        if requested:
            self.stopping = True
            stop_after_this_update(self.run_cfg)
            what = signal.Signals(self.received).name if self.received is not None else "a signal on another rank"
            logger.warning(f"received {what}: saving a checkpoint after update {update_num + 1} and stopping; "
                           f"run the same command to resume")
        return requested


def stop_after_this_update(run_cfg: DictConfig) -> None:
    """fairseq ends the run (validates, saves checkpoint_last.pt, exits 0) after the update in progress."""
    run_cfg.optimization.stop_time_hours = STOP_NOW_HOURS


def train_nothing(run_cfg: DictConfig) -> None:
    """fairseq skips its epoch loop: the run ends at once, its checkpoints untouched."""
    run_cfg.optimization.max_epoch = -1


def finished(num_updates: int, run_cfg: DictConfig) -> bool:
    """True when a checkpoint at ``num_updates`` has reached the run's optimization.max_update."""
    max_update = run_cfg.optimization.max_update
    return bool(max_update) and max_update > 0 and num_updates >= max_update


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _collective_device() -> torch.device:
    """NCCL reduces CUDA tensors only (fairseq has set each rank's device); gloo CPU tensors."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
