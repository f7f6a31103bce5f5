"""The other rank of a two-rank gloo group for tests/test_laser_task.py: it joins and takes part in the one
collective of the laser task's start-up check, the broadcast of rank 0's resume point.

Kept free of laser_fairseq and fairseq imports so that a spawned process starts in about a second.
"""

import datetime
import json

import torch.distributed as dist


def join_the_resume_broadcast(rank: int, world_size: int, init_file: str, answer_file: str) -> None:
    """As rank 1: receive rank 0's answer (updates to resume from, or None) and write it to ``answer_file`` as
    JSON. As rank 0: send None (no checkpoint to resume from)."""
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        answer = [None] if rank == 0 else ["not received"]
        dist.broadcast_object_list(answer, src=0)
        with open(answer_file, "w") as handle:
            json.dump(answer[0], handle)
    finally:
        dist.destroy_process_group()
