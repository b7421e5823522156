"""The listener tests' fixtures: real listeners in the test process (see tests/support/listener.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.listener import RunningListener, start_listener as start


@pytest.fixture
def start_listener(tmp_path: Path) -> Iterator[Callable[..., RunningListener]]:
    """Factory: ``start_listener(database_url=None, **{"listener.key": value})``."""
    started: list[RunningListener] = []

    def factory(database_url: str | None = None, **overrides: object) -> RunningListener:
        running = start(tmp_path / f"data{len(started)}", database_url, **overrides)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.service.stop(grace=5)
        running.engine.dispose()


@pytest.fixture
def listener(start_listener: Callable[..., RunningListener]) -> RunningListener:
    """A listener on SQLite accepting any calling AE on loopback."""
    return start_listener()
