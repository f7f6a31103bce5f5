"""Test harness: ``fairseq-hydra-train`` that saves every rank's final state (fairseq itself saves on rank 0 only).

    torchrun --nproc_per_node 2 tests/fairseq_rank_dump.py DUMP_DIR [--cpu-ddp] <fairseq-hydra-train arguments>

When training ends, rank R writes DUMP_DIR/rank{R}.pt with its model state, optimizer state, update count and
the class of the data-parallel wrapper it trained with. No product code is changed.

``--cpu-ddp``: fairseq's ``pytorch_ddp`` backend passes ``device_ids=[device_id]`` to torch's
DistributedDataParallel, which torch refuses for a CPU module; the flag drops ``device_ids`` /
``output_device`` for CPU modules only, so fairseq's GPU code path (DDP with find_unused_parameters=False)
can be exercised on CPU ranks.
"""

import os
import sys

import torch


def capture_trainers():
    """Record every fairseq Trainer created in this process."""
    from fairseq import trainer as fairseq_trainer

    trainers = []
    original_init = fairseq_trainer.Trainer.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        trainers.append(self)

    fairseq_trainer.Trainer.__init__ = init
    return trainers


class CpuDistributedDataParallel(torch.nn.parallel.DistributedDataParallel):
    """torch's DDP, without device ids for a module on CPU (as torch requires there)."""

    def __init__(self, module, device_ids=None, output_device=None, **kwargs):
        on_cpu = next(module.parameters()).device.type == "cpu"
        if on_cpu:
            device_ids, output_device = None, None
        super().__init__(module, device_ids=device_ids, output_device=output_device, **kwargs)
        self.laser_find_unused_parameters = kwargs.get("find_unused_parameters")


def allow_pytorch_ddp_on_cpu():
    from fairseq.models import distributed_fairseq_model

    distributed_fairseq_model.DistributedDataParallel = CpuDistributedDataParallel


def dump_rank_state(trainer, dump_dir: str):
    wrapper = getattr(trainer.model, "module", trainer.model)  # ModuleProxyWrapper -> the DDP object
    state = {
        "rank": trainer.data_parallel_rank,
        "world_size": trainer.data_parallel_world_size,
        "num_updates": trainer.get_num_updates(),
        "wrapper": type(wrapper).__name__,
        "find_unused_parameters": getattr(wrapper, "laser_find_unused_parameters", None),
        "model": trainer.get_model().state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
    }
    os.makedirs(dump_dir, exist_ok=True)
    torch.save(state, os.path.join(dump_dir, f"rank{trainer.data_parallel_rank}.pt"))


def main():
    dump_dir = sys.argv.pop(1)
    if len(sys.argv) > 1 and sys.argv[1] == "--cpu-ddp":
        sys.argv.pop(1)
        allow_pytorch_ddp_on_cpu()
    trainers = capture_trainers()
    from fairseq_cli.hydra_train import cli_main

    cli_main()
    if not trainers:
        sys.exit("fairseq_rank_dump: no trainer was created")
    dump_rank_state(trainers[-1], dump_dir)


if __name__ == "__main__":
    main()
