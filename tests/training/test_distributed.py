"""In-batch negatives gathered across ranks: 2 gloo processes == 1 process on the same global batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.support.distributed import loss_and_grad, worker
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_two_gloo_ranks_match_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned ranks unpickle the worker by its module name: they need the repository on their path.
    monkeypatch.syspath_prepend(str(ROOT))
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=2, join=True)
    single_loss, single_grad = loss_and_grad(slice(0, 8))
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert abs(result["loss"] - single_loss) < 1e-4, (result["loss"], single_loss)
        assert torch.allclose(result["grad"], single_grad, atol=1e-5, rtol=1e-3)
