"""Small real cohorts shared by the cohort tests (generated once per session), and a DCMTK
storescp to send them to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cohorts import make_cohort
from tests.support.dcmtk import StoreSCP


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Default acquisition and report style; a third lesion-free so normal reports are covered."""
    return make_cohort(tmp_path_factory.mktemp("cohort") / "c", n=6, seed=11, lesion_free_fraction=0.3)


@pytest.fixture(scope="session")
def shifted_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both named shifts at once: external acquisition and the narrative report style."""
    return make_cohort(tmp_path_factory.mktemp("cohort") / "c", n=4, seed=11, shift="external,report-style",
                       size=(28, 40, 44))


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    scp = StoreSCP(tmp_path / "received")
    yield scp
    scp.stop()
