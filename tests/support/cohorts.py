"""Synthetic cohorts written by radpair's own generator (the one `radpair cohort` runs)."""

from __future__ import annotations

from pathlib import Path

from radpair.core.task import TaskDefinition, load_task
from radpair.training.cohort.generate import CohortSpec, generate_cohort
from radpair.training.cohort.shifts import resolve_shift


def make_cohort(out: Path, n: int, seed: int, shift: str = "none", size: tuple[int, int, int] = (32, 48, 48),
                workers: int = 1, lesion_free_fraction: float = 0.1, task: TaskDefinition | None = None) -> Path:
    generate_cohort(CohortSpec(out=out, n=n, seed=seed, shift=resolve_shift(shift), task=task or load_task(),
                               size=size, lesion_free_fraction=lesion_free_fraction), workers=workers)
    return out
