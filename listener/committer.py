"""Group commit: concurrent C-STOREs share one database transaction and one folder fsync.

Association threads verify their instance and stage it (written and fsync'd, in parallel), then
hand it to the committer and wait. The committer thread takes what has been handed in, waits up
to ``window`` seconds for the stores other associations are still handling (never when none
are: one association's stores are committed one by one, without delay), at most ``max_batch``,
indexes the batch in one transaction (:meth:`Archive.index`, which also renames the files and
fsyncs each folder once) and wakes each waiter with its own outcome. A C-STORE is answered only
after its batch committed: acknowledged still means fsync'd and indexed.

A batch that fails for a reason that is not the database's or the disk's (e.g. one member's row
is refused) is retried member by member, so one bad instance cannot fail the others; a database
or disk failure is every member's (each answers 0xA700).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future

from radpair.listener.archive import Archive, ArchiveUnavailable, Indexed, Received

log = logging.getLogger(__name__)

_Entry = tuple[Received, "Future[Indexed]"]


class GroupCommitter:
    """One per listener. ``in_flight()`` is the number of stores being handled right now."""

    def __init__(self, archive: Archive, max_batch: int, window: float, in_flight: Callable[[], int]) -> None:
        self.archive = archive
        self.max_batch = max_batch
        self.window = window
        self._in_flight = in_flight
        self._queue: queue.SimpleQueue[_Entry | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False
        # The most instances one transaction indexed so far (a diagnostic the tests read).
        self.largest_batch = 0

    def start(self) -> None:
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="listener-commit", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Commit what was handed in, then stop; later hand-ins are refused (0xA700)."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def index(self, item: Received) -> Indexed:
        """Hand ``item`` in and wait until its batch is committed (or raise its batch's error)."""
        if self._closed:
            raise ArchiveUnavailable("listener is shutting down")
        future: Future[Indexed] = Future()
        self._queue.put((item, future))
        return future.result()

    def _run(self) -> None:
        while (batch := self._collect()) is not None:
            if batch:
                self._commit(batch)

    def _collect(self) -> list[_Entry] | None:
        """The next batch ([] after the close marker when entries preceded it; None to stop)."""
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_batch:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._in_flight() <= len(batch):
                    break  # nobody else is about to hand one in
                try:
                    entry = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if entry is None:
                self._queue.put(None)  # stop after this batch
                break
            batch.append(entry)
        return batch

    def _commit(self, batch: list[_Entry]) -> None:
        self.largest_batch = max(self.largest_batch, len(batch))
        try:
            outcomes = self.archive.index([item for item, _ in batch])
        except Exception as exc:  # noqa: BLE001 - handed to the waiters, who answer with it
            if len(batch) > 1 and not isinstance(exc, (ArchiveUnavailable, OSError)):
                log.warning("a batch of %d failed (%s: %s); indexing its members one by one", len(batch),
                            type(exc).__name__, exc)
                for entry in batch:
                    self._commit([entry])
                return
            for _, future in batch:
                future.set_exception(exc)
            return
        for (_, future), outcome in zip(batch, outcomes):
            future.set_result(outcome)
