"""Worker threads: claim a job, run its handler under a heartbeated lease, settle the outcome.

A handler is ``handler(job, check_lease) -> note`` and signals its outcome by what it raises:
nothing (done; the returned note is logged), :class:`pipeline.jobs.Skip` (skipped, with why),
:class:`pipeline.jobs.Permanent` (dead at once, with why), ``ConnectionError`` (its peer — the
PACS or Triton — is unreachable or out of resources: retry with backoff without using up an
attempt, for at most the queue's retry horizon), anything else (a failed attempt: backoff, then
the dead letter). A job that dies is logged at WARNING with its reason, which stays on the job.
``check_lease()`` raises :class:`LeaseLost` once another worker may own the job, so a handler
never commits work for a job it no longer holds.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable

from radpair.core.models import JobState
from radpair.pipeline.jobs import ClaimedJob, JobQueue, Permanent, Skip

log = logging.getLogger(__name__)

Handler = Callable[[ClaimedJob, Callable[[], None]], str]


class LeaseLost(RuntimeError):
    """Another worker may now own this job: abandon it without committing anything."""


class _Heartbeat:
    """Renews one job's lease every ``interval`` seconds in a background thread."""

    def __init__(self, queue: JobQueue, job_id: int, owner: str, interval: float) -> None:
        self.lost = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(queue, job_id, owner, interval),
                                        name=f"heartbeat-{job_id}", daemon=True)
        self._thread.start()

    def _run(self, queue: JobQueue, job_id: int, owner: str, interval: float) -> None:
        while not self._done.wait(interval):
            try:
                if not queue.heartbeat(job_id, owner):
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - a database hiccup: try again next beat
                log.warning("heartbeat for job %d failed", job_id, exc_info=True)

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost("lease lost")

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


class WorkerPool:
    """``count`` threads taking jobs of the kinds in ``handlers`` until :meth:`stop`."""

    def __init__(self, queue: JobQueue, handlers: dict[str, Handler], count: int,
                 poll_interval: float, heartbeat_interval: float) -> None:
        self.queue = queue
        self.handlers = handlers
        self.count = count
        self.poll_interval = poll_interval
        self.heartbeat_interval = heartbeat_interval
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._owner = f"{socket.gethostname()}:{os.getpid()}"

    def start(self) -> None:
        for i in range(self.count):
            thread = threading.Thread(target=self._loop, args=(f"{self._owner}:w{i}",), name=f"pipeline-worker-{i}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Look for work now rather than at the next poll (e.g. right after enqueueing)."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()

    def _loop(self, owner: str) -> None:
        kinds = tuple(self.handlers)
        while not self._stop.is_set():
            try:
                job = self.queue.claim(owner, kinds)
            except Exception:  # noqa: BLE001 - database unavailable: keep the worker alive
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self._wake.wait(self.poll_interval)
                self._wake.clear()
                continue
            self.run_one(job, owner)

    def run_one(self, job: ClaimedJob, owner: str) -> None:
        heartbeat = _Heartbeat(self.queue, job.id, owner, self.heartbeat_interval)
        try:
            self._run_and_settle(job, owner, heartbeat)
        except Exception:  # noqa: BLE001 - the database went away while the outcome was recorded
            log.exception("job %d %s: its outcome could not be recorded; it runs again when its lease expires",
                          job.id, job.key)
        finally:
            heartbeat.stop()

    def _run_and_settle(self, job: ClaimedJob, owner: str, heartbeat: _Heartbeat) -> None:
        start = time.perf_counter()
        try:
            note = self.handlers[job.kind](job, heartbeat.check)
            heartbeat.check()
        except Skip as exc:
            self.queue.complete(job.id, owner, JobState.SKIPPED, str(exc))
            log.info("job %d %s skipped: %s", job.id, job.key, exc)
        except LeaseLost:
            log.warning("job %d %s abandoned: its lease was lost", job.id, job.key)
        except Permanent as exc:
            if self.queue.bury(job.id, owner, f"{type(exc).__name__}: {exc}"):
                log.warning("job %d %s dead: %s", job.id, job.key, exc)
        except ConnectionError as exc:
            state = self.queue.wait(job.id, owner, f"{type(exc).__name__}: {exc}")
            if state is JobState.DEAD:
                log.warning("job %d %s dead: its peer stayed unavailable for the retry horizon: %s",
                            job.id, job.key, exc)
            else:
                log.warning("job %d %s waits: %s", job.id, job.key, exc)
        except Exception as exc:  # noqa: BLE001 - any failure is recorded on the job, never fatal
            state = self.queue.fail(job.id, owner, "".join(traceback.format_exception(exc)))
            log.error("job %d %s attempt %d failed (%s): %s: %s", job.id, job.key, job.attempts,
                      state.value if state else "lease lost", type(exc).__name__, exc)
            if state is JobState.DEAD:
                log.warning("job %d %s dead after %d attempts: %s: %s", job.id, job.key, job.attempts,
                            type(exc).__name__, exc)
        else:
            self.queue.complete(job.id, owner)
            log.info("job %d %s done in %.2fs: %s", job.id, job.key, time.perf_counter() - start, note)
