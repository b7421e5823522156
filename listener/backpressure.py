"""Back-pressure: refuse a C-STORE at once (0xA700) when it cannot be archived now, instead of
letting every association grind through a full disk or a database that is down.

Two causes: free space on the instance store below ``disk_reserve`` (kept free so the database
and the files already being received can still be written; checked at every store, one
``statvfs``), and a database that just failed (after the archive's own retries). While the
database is down one store per ``database_retry_interval`` is let through as the probe; the
first that commits ends the outage. Both resume by themselves: nothing to restart. C-ECHO never
passes here. Entering and leaving each state is logged once, not every refused instance.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)


class IngestGate:
    def __init__(self, store_root: Path, disk_reserve: int, database_retry_interval: float) -> None:
        self.store_root = store_root
        self.disk_reserve = disk_reserve
        self.retry_interval = database_retry_interval
        self._lock = threading.Lock()
        self._disk_low = False
        self._next_probe: float | None = None  # set while the database is down

    @property
    def database_down(self) -> bool:
        return self._next_probe is not None

    def refusal(self, size: int) -> str | None:
        """Why a store of ``size`` bytes is refused now, or None to go ahead."""
        free = shutil.disk_usage(self.store_root).free
        low = free - size < self.disk_reserve
        if low != self._disk_low:
            self._disk_low = low
            if low:
                log.warning("listener: %d MB free on the instance store, below listener.disk_reserve (%d MB): "
                            "refusing stores (0xA700) until there is room", free // 10**6, self.disk_reserve // 10**6)
            else:
                log.info("listener: %d MB free on the instance store again: accepting stores", free // 10**6)
        if low:
            return f"free disk below listener.disk_reserve ({free // 10**6} MB free)"
        with self._lock:
            if self._next_probe is None:
                return None
            now = time.monotonic()
            if now < self._next_probe:
                return "database unreachable (retrying)"
            self._next_probe = now + self.retry_interval  # this store is the probe
            return None

    def database_failed(self) -> None:
        with self._lock:
            if self._next_probe is None:
                log.warning("listener: database unreachable: refusing stores (0xA700), trying again every %.1f s",
                            self.retry_interval)
            self._next_probe = time.monotonic() + self.retry_interval

    def database_ok(self) -> None:
        if self._next_probe is not None:
            with self._lock:
                self._next_probe = None
            log.info("listener: database reachable again: accepting stores")
