"""`radpair serve` as a real subprocess (for the durability tests and the ingest benchmark)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

RADPAIR = [sys.executable, "-m", "radpair"]
_LISTENING = re.compile(r"listener: AE \S+ on [\d.]+:(\d+)")


class ServeProcess:
    """Starts `radpair serve --data-dir DIR --port 0`, learns the port from its start-up log line,
    and keeps its log (a reader thread drains the pipe so the service never blocks on it).

    Without inference unless ``env`` sets ``RADPAIR_TRITON_MODE``: most tests serve only the
    listener, and an embedded Triton on its fixed default ports would collide between them."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, timeout: float = 60,
                 radpair: Sequence[str] = RADPAIR, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen([*radpair, "serve", "--data-dir", str(data_dir), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                                     start_new_session=True,
                                     env={**os.environ, "RADPAIR_TRITON_MODE": "off", **(env or {})})
        self.lines: list[str] = []
        self.port = 0
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError("radpair serve did not start:\n" + self.log())

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if (m := _LISTENING.search(line)) and not self._ready.is_set():
                self.port = int(m.group(1))
                self._ready.set()
        self._ready.set()

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; returns the exit status (and waits for the last log lines)."""
        self.proc.terminate()
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def crash(self) -> None:
        """SIGKILL every process of the service at once (its listener workers too), as a power cut would."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.crash()
