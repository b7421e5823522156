"""Small shared pieces of the training loops: seeding, mixed precision, run-directory files."""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch seeds; deterministic algorithms where torch has them."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


@contextlib.contextmanager
def autocast(device: torch.device) -> Iterator[None]:
    """bf16 autocast on GPU (no loss scaling needed); full precision on CPU."""
    if device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


def step_generator(seed: int, *parts: int) -> torch.Generator:
    """A CPU generator seeded from (seed, parts…): same on every rank for the same parts."""
    value = seed
    for p in parts:
        value = (value * 1_000_003 + p) % (2**63 - 1)
    return torch.Generator().manual_seed(value)
