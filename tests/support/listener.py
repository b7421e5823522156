"""A real listener in the test process (a pynetdicom server thread on an ephemeral port), driven
with DCMTK's echoscu/storescu."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.settings import Settings, load_settings
from radpair.listener.pool import ListenerPool
from radpair.listener.server import ListenerService
from tests.support.dcmtk import DCMTK_ENV, require


@dataclass
class RunningListener:
    service: ListenerService | ListenerPool
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


def start_listener(data_dir: Path, database_url: str | None = None, processes: bool = False,
                   **overrides: object) -> RunningListener:
    """A listener on ``data_dir`` (SQLite there unless ``database_url``), any calling AE on loopback;
    in this process, or with ``processes`` the multi-process one of ``radpair serve``
    (``listener.workers`` of them)."""
    settings = load_settings(environ={}, overrides={
        "data_dir": str(data_dir), "listener.port": 0, "listener.stable_age": 1.0,
        "database.url": database_url or "", **overrides})
    engine = make_engine(settings.database_url)
    upgrade(engine)
    service = (ListenerPool if processes else ListenerService)(settings, engine)
    service.start()
    return RunningListener(service, settings, engine, session_factory(engine))
