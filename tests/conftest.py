"""Fixtures shared by the whole suite: real databases (SQLite and PostgreSQL); and a check, before
anything runs, that the real parts the tests talk to are installed (a missing one fails the run
with what to install; nothing skips itself into green)."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, find_pg_bin

_db_counter = itertools.count()

# What `make sysdeps` installs (deploy/install-system-deps.sh), by the program each package gives.
SYSTEM_TOOLS = {"storescu": "dcmtk", "echoscu": "dcmtk", "storescp": "dcmtk", "Orthanc": "orthanc",
                "dciodvfy": "dicom3tools", "openssl": "openssl"}


def pytest_sessionstart(session: pytest.Session) -> None:
    from radpair.serving.server import TRITON_DIR

    missing = [f"{tool} (Debian package {package})" for tool, package in SYSTEM_TOOLS.items() if shutil.which(tool) is None]
    if find_pg_bin() is None:
        missing.append("initdb/pg_ctl (Debian package postgresql)")
    if not (TRITON_DIR / "bin" / "tritonserver").is_file():
        missing.append(f"tritonserver (the nvidia-pytriton wheel, expected at {TRITON_DIR})")
    if missing:
        raise pytest.UsageError("the tests talk to real components that are not installed: " + "; ".join(missing)
                                + ". Run `make test` (it installs them) or `make sysdeps`.")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(find_pg_bin()).start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL, once for SQLite and once for a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'radpair.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"radpair_test_{next(_db_counter)}")
