"""A real listener for the tests: in-process (a pynetdicom server thread) on an ephemeral port,
and helpers to drive it with DCMTK's echoscu/storescu (TCP_NODELAY=1, see NOTES.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pynetdicom.dsutils import split_dataset
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, session_factory, upgrade
from core.settings import Settings, load_settings
from listener.server import ListenerService

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"DCMTK tool {tool!r} is not installed: run `make sysdeps` (apt-get install dcmtk)")
    return path


@dataclass
class RunningListener:
    service: ListenerService
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]

    @property
    def port(self) -> int:
        return self.service.port

    def echoscu(self, calling: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
        return subprocess.run([require("echoscu"), "-aet", calling, "-aec", self.settings.listener.ae_title,
                               "127.0.0.1", str(self.port)], env=DCMTK_ENV, capture_output=True, text=True,
                              timeout=60)

    def storescu(self, *files: Path | str, calling: str = "STORESCU",
                 extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
        """storescu -v (each response's status is in the output); -R proposes exactly the SOP
        classes and transfer syntaxes of the files being sent."""
        return subprocess.run([require("storescu"), "-v", "-R", *extra, "-aet", calling, "-aec",
                               self.settings.listener.ae_title, "127.0.0.1", str(self.port),
                               *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True, timeout=300)


@pytest.fixture
def start_listener(tmp_path: Path) -> Iterator[Callable[..., RunningListener]]:
    """Factory: ``start_listener(database_url=None, **{"listener.key": value})``."""
    started: list[RunningListener] = []

    def start(database_url: str | None = None, **overrides: object) -> RunningListener:
        settings = load_settings(environ={}, overrides={
            "data_dir": str(tmp_path / f"data{len(started)}"), "listener.port": 0, "listener.stable_age": 1.0,
            "database.url": database_url or "", **overrides})
        engine = make_engine(settings.database_url)
        upgrade(engine)
        service = ListenerService(settings, engine)
        service.start()
        running = RunningListener(service, settings, engine, session_factory(engine))
        started.append(running)
        return running

    yield start
    for running in started:
        running.service.stop(grace=5)
        running.engine.dispose()


@pytest.fixture
def listener(start_listener: Callable[..., RunningListener]) -> RunningListener:
    """A listener on SQLite accepting any calling AE on loopback."""
    return start_listener()


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta group (what a sender puts on the wire): everything after the
    last group 0002 element, as pynetdicom and DCMTK split a file."""
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]
