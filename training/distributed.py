"""torchrun / DistributedDataParallel plumbing: one process per device, gloo on CPU, nccl on GPU.

In-batch negatives are gathered across ranks in :func:`training.contrastive.gather`; here is only
process-group set-up and the per-rank device.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "") -> Context:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); else a single process.

    ``device``: "" picks CUDA when available, else CPU; "cpu"/"cuda" force one.
    """
    use_cuda = torch.cuda.is_available() if not device else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return Context(rank, world, torch.device("cuda", local))
    return Context(rank, world, torch.device("cpu"))
