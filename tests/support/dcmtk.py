"""DCMTK as the real DICOM peer of the tests: echoscu/storescu as clients, storescp as a receiver.

Every tool runs with ``TCP_NODELAY=1`` (Nagle × delayed ACK costs ~40 ms per instance on loopback).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pynetdicom.dsutils import split_dataset

from tests.support.ports import free_port

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def require(tool: str) -> str:
    """The tool's path (tests/conftest.py has checked at start that DCMTK is installed)."""
    path = shutil.which(tool)
    assert path is not None, f"DCMTK tool {tool!r} is not installed: run `make sysdeps`"
    return path


def storescu(files: list[Path], port: int, called: str, calling: str = "MODALITY", timeout: float = 120) -> None:
    """Send ``files`` with storescu; raises if storescu fails."""
    subprocess.run([require("storescu"), "-aec", called, "-aet", calling, "127.0.0.1", str(port), *map(str, files)],
                   check=True, capture_output=True, env=DCMTK_ENV, timeout=timeout)


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta group (what a sender puts on the wire): everything after the
    last group 0002 element, as pynetdicom and DCMTK split a file."""
    _meta, offset = split_dataset(path)
    return path.read_bytes()[offset:]


class StoreSCP:
    """DCMTK storescp on a free loopback port, writing what it receives to ``folder``."""

    def __init__(self, folder: Path, aet: str = "STORESCP") -> None:
        require("storescp")
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


def stream_and_act(port: int, chunks: list[list[Path]], after: int, action: Callable[[], None]) -> list[Path]:
    """One ``storescu -v`` per chunk, all at once; call ``action`` once ``after`` instances were
    acknowledged in all; return the files the senders saw acknowledged (from their logs: "Sending
    file" then the Success response)."""
    senders = [subprocess.Popen([require("storescu"), "-v", "-aec", "RADPAIR", "127.0.0.1", str(port),
                                 *map(str, chunk)], env=DCMTK_ENV, stderr=subprocess.PIPE, text=True)
               for chunk in chunks]
    acked: list[Path] = []
    lock = threading.Lock()

    def follow(sender: subprocess.Popen[str]) -> None:
        current: Path | None = None
        assert sender.stderr is not None
        for line in sender.stderr:
            if line.startswith("I: Sending file: "):
                current = Path(line.removeprefix("I: Sending file: ").strip())
            elif "Received Store Response (Success)" in line and current is not None:
                with lock:
                    acked.append(current)
                    if len(acked) == after:
                        action()
        sender.wait()

    readers = [threading.Thread(target=follow, args=(sender,)) for sender in senders]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    return acked
