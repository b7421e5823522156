"""Small real cohorts shared by the cohort tests (generated once per session), and a DCMTK
storescp to send them to."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import free_port
from training.cohort.generate import CohortSpec, generate_cohort
from training.cohort.shifts import resolve_shift

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # see NOTES.md: Nagle x delayed ACK on loopback


def make_cohort(out: Path, n: int, seed: int, shift: str = "none", size: tuple[int, int, int] = (32, 48, 48),
                workers: int = 1, lesion_free_fraction: float = 0.1) -> Path:
    generate_cohort(CohortSpec(out=out, n=n, seed=seed, shift=resolve_shift(shift), size=size,
                               lesion_free_fraction=lesion_free_fraction), workers=workers)
    return out


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default acquisition and report style; a third lesion-free so normal reports are covered."""
    return make_cohort(tmp_path_factory.mktemp("cohort") / "c", n=6, seed=11, lesion_free_fraction=0.3)


@pytest.fixture(scope="session")
def shifted_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both named shifts at once: external acquisition and the narrative report style."""
    return make_cohort(tmp_path_factory.mktemp("cohort") / "c", n=4, seed=11, shift="external,report-style",
                       size=(28, 40, 44))


class StoreSCP:
    """DCMTK storescp on a free loopback port, writing what it receives to ``folder``."""

    def __init__(self, folder: Path, aet: str = "STORESCP") -> None:
        if shutil.which("storescp") is None:
            pytest.skip("DCMTK storescp is not installed: run `make sysdeps`")
        self.folder, self.aet, self.port = folder, aet, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(["storescp", "-aet", aet, "-od", str(folder), str(self.port)],
                                        env=DCMTK_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 10
        while subprocess.run(["echoscu", "-aec", aet, "127.0.0.1", str(self.port)], env=DCMTK_ENV,
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"storescp did not start on port {self.port}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path / "received")
    yield scp
    scp.stop()
