"""The worker of the 2-process gloo test: one rank's loss and gradient on its half of a batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from radpair.training.config import load_config
from radpair.training.contrastive import ContrastiveModel
from tests.support.models import TINY

REPORTS = ["left frontal lobe mass", "cerebellar lesion with cyst", "pons expansile lesion", "no abnormality",
           "right parietal mass", "vermis lesion", "thalamic lesion", "fourth ventricle mass"]
LOCATIONS = [0, 1, 1, 3, 0, 1, 0, 1]


def loss_and_grad(rows: slice) -> tuple[float, torch.Tensor]:
    """Loss over the global batch of 8 and the (DDP-averaged) gradient of one projection weight."""
    config = load_config(overrides=[*TINY, "pretrain.negatives_k=2"])
    torch.manual_seed(0)
    # Training mode: the projection heads' batch norm takes its statistics over the global batch
    # (all ranks' rows), so the split must not change them. The text encoder has dropout: eval.
    model = ContrastiveModel(config).train()
    model.text_encoder.eval()
    images = torch.randn(8, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    text = model.text_encoder.tokenize(REPORTS[rows])
    parts = model(images[rows], text, torch.tensor(LOCATIONS[rows]), torch.Generator().manual_seed(7))
    parts["total"].backward()
    grad = model.image_global[0].weight.grad.clone()
    if dist.is_initialized():
        dist.all_reduce(grad)
        grad /= dist.get_world_size()  # what DistributedDataParallel does
    return float(parts["total"].detach()), grad


def worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    loss, grad = loss_and_grad(slice(4 * rank, 4 * rank + 4))
    torch.save({"loss": loss, "grad": grad}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
