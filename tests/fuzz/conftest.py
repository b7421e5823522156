"""The hostile corpus' shared pieces: the seeds and a running listener for the C-STORE target."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import _config as pynetdicom_config

from tests.support.fuzz import Seed, seeds, sendable
from tests.support.listener import RunningListener, start_listener


@pytest.fixture(scope="module")
def seed_pool(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    return sendable(seeds(tmp_path_factory.mktemp("seeds")))


@pytest.fixture(scope="module")
def fuzz_listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningListener]:
    """A real listener (SQLite) taking the mutated instances; pynetdicom sends each file's bytes as
    they are (``STORE_SEND_CHUNKED_DATASET``), never re-encoded: what a broken peer puts on the wire."""
    previous = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    running = start_listener(tmp_path_factory.mktemp("fuzz-listener"))
    yield running
    running.service.stop(grace=5)
    running.engine.dispose()
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = previous


@pytest.fixture(scope="module")
def outcomes() -> collections.Counter[str]:
    return collections.Counter()


def case_file(folder: Path, part10: bytes) -> Path:
    path = folder / "case.dcm"
    path.write_bytes(part10)
    return path
