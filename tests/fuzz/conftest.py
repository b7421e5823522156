"""The hostile corpus' shared pieces: the seeds and a running listener for the C-STORE target."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import strategies as st
from pynetdicom import _config as pynetdicom_config

from tests.support.fuzz import Seed, StoreClient, header_outcome, mutated, report_outcome, seeds, sendable
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


def run_case(data: st.DataObject, pool: list[Seed], client: StoreClient, folder: Path,
             outcomes: collections.Counter[str]) -> tuple[Seed, int | None]:
    """One generated case through all three targets, counted in ``outcomes``: the seed it mutated
    and the C-STORE status (None: no response)."""
    seed, part10 = data.draw(mutated(pool))
    outcomes[header_outcome(seed, part10)] += 1
    outcomes[report_outcome(part10)] += 1
    path = folder / "case.dcm"
    path.write_bytes(part10)
    status = client.send(path)
    outcomes["store:none" if status is None else f"store:0x{status:04X}"] += 1
    return seed, status
