"""A tiny real cohort (16 studies + 6 external, 32³) written once per session by `radpair cohort`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A small, fast configuration for CPU tests: 32³ at 6 mm, ResNet-10 with narrow stages, short text.
TINY = [
    "image.depth=10", "image.widths=[8, 16, 32, 64]", "image.head_hidden=16",
    "data.spacing=[6, 6, 6]", "data.spatial_size=[32, 32, 32]",
    "text.max_length=48", "pretrain.embed_dim=32", "pretrain.batch_size=8",
    "finetune.batch_size=4", "finetune.folds=2", "finetune.warmup_epochs=1", "finetune.step_size=1",
]


def _cohort(out: Path, n: int, seed: int, shift: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "radpair.cli", "cohort", "--out", str(out), "--n", str(n), "--seed", str(seed),
         "--shift", shift, "--size", "32", "32", "32", "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.fixture(scope="session")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohorts")
    folders = {"internal": root / "internal", "external": root / "external"}
    jobs = [_cohort(folders["internal"], 16, 1, "none"), _cohort(folders["external"], 6, 2, "external")]
    for job in jobs:
        output, _ = job.communicate(timeout=300)
        assert job.returncode == 0, output
    return folders
