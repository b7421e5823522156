"""In-batch negatives gathered across ranks: 2 gloo processes == 1 process on the same global batch."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.support.postgres import free_port
from tests.training.conftest import TINY
from training.config import load_config
from training.contrastive import ContrastiveModel

REPORTS = ["left frontal lobe mass", "cerebellar lesion with cyst", "pons expansile lesion", "no abnormality",
           "right parietal mass", "vermis lesion", "thalamic lesion", "fourth ventricle mass"]
LOCATIONS = [0, 1, 1, 3, 0, 1, 0, 1]


def _loss_and_grad(rows: slice) -> tuple[float, torch.Tensor]:
    """Loss over the global batch of 8 and the (DDP-averaged) gradient of one projection weight."""
    config = load_config(overrides=[*TINY, "pretrain.negatives_k=2"])
    torch.manual_seed(0)
    model = ContrastiveModel(config).eval()  # batch-norm statistics must not depend on the split
    images = torch.randn(8, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    text = model.text_encoder.tokenize(REPORTS[rows])
    parts = model(images[rows], text, torch.tensor(LOCATIONS[rows]), torch.Generator().manual_seed(7))
    parts["total"].backward()
    grad = model.image_global[0].weight.grad.clone()
    if dist.is_initialized():
        dist.all_reduce(grad)
        grad /= dist.get_world_size()  # what DistributedDataParallel does
    return float(parts["total"].detach()), grad


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    loss, grad = _loss_and_grad(slice(4 * rank, 4 * rank + 4))
    torch.save({"loss": loss, "grad": grad}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    single_loss, single_grad = _loss_and_grad(slice(0, 8))
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert abs(result["loss"] - single_loss) < 1e-4, (result["loss"], single_loss)
        assert torch.allclose(result["grad"], single_grad, atol=1e-5, rtol=1e-3)
