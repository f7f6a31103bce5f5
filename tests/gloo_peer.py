"""The other rank of a two-rank gloo group for tests/test_laser_task.py: it joins and waits at one barrier.

Kept free of laser_fairseq and fairseq imports so that a spawned process starts in about a second.
"""

import datetime

import torch.distributed as dist


def wait_at_one_barrier(rank: int, world_size: int, init_file: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()
