"""A tiny real cohort (16 studies + 6 external, 32³) written once per session by `radpair cohort`,
and the task file at that size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from radpair.core.task import TaskDefinition, load_task
from tests.support.models import task_file


def _cohort(out: Path, n: int, seed: int, shift: str, lesion_free: float = 0.1) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "radpair", "cohort", "--out", str(out), "--n", str(n), "--seed", str(seed),
         "--shift", shift, "--size", "32", "32", "32", "--workers", "1", "--lesion-free-fraction", str(lesion_free)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.fixture(scope="session")
def cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cohorts")
    folders = {"internal": root / "internal", "external": root / "external"}
    jobs = [_cohort(folders["internal"], 16, 1, "none", 0.25), _cohort(folders["external"], 6, 2, "external")]
    for job in jobs:
        output, _ = job.communicate(timeout=300)
        assert job.returncode == 0, output
    return folders


@pytest.fixture(scope="session")
def tiny_task_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped task at 32³ and 6 mm (what the tiny cohorts and TINY configuration use)."""
    return task_file(tmp_path_factory.mktemp("task") / "task.toml")


@pytest.fixture(scope="session")
def tiny_task(tiny_task_path: Path) -> TaskDefinition:
    return load_task(tiny_task_path)
