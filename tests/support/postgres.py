"""A throw-away real PostgreSQL server for tests: initdb + pg_ctl in a temporary folder.

initdb refuses to run as root (and CI runs as root), so the server runs as the unprivileged
``postgres`` system user the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.ports import free_port


def find_pg_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """Start with :meth:`start`, connect with :attr:`url`, stop with :meth:`stop`."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="radpair-pg-"))
        self.datadir = self.tmp / "data"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, *cmd: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return list(cmd)

    def start(self) -> "PostgresServer":
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres", "postgres")
        subprocess.run(
            self._as_owner(str(self.bin_dir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                           "--auth=trust", "--no-sync", "-E", "UTF8"),
            check=True, capture_output=True,
        )
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            self._as_owner(str(self.bin_dir / "pg_ctl"), "-D", str(self.datadir), "-o", opts,
                           "-l", str(self.tmp / "log"), "-w", "start"),
            check=True, capture_output=True,
        )
        return self

    def restart(self) -> None:
        """Stop (fast: connections are cut) and start again on the same port and data."""
        opts = f"-p {self.port} -k {self.tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            self._as_owner(str(self.bin_dir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-o", opts,
                           "-l", str(self.tmp / "log"), "-w", "restart"),
            check=True, capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            self._as_owner(str(self.bin_dir / "pg_ctl"), "-D", str(self.datadir), "-m", "fast", "stop"),
            capture_output=True,
        )
        shutil.rmtree(self.tmp, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """A fresh empty database on this server; returns its URL."""
        subprocess.run(
            self._as_owner(str(self.bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                           "-U", "postgres", name),
            check=True, capture_output=True,
        )
        return self.url.rsplit("/", 1)[0] + "/" + name
