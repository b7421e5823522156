"""What the pipeline adds to ``radpair serve``: scheduler jobs and worker threads.

APScheduler drives the periodic work — finding stable study generations that have no inference
job yet, and returning jobs whose worker died (expired lease) to the queue — and the worker pool
runs the jobs. Everything that matters is in SQL, so a restart loses nothing: pending jobs stay
pending, a killed worker's job is taken again once its lease expires.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine

from radpair.core.db import session_factory
from radpair.core.gateway import ModelGateway
from radpair.core.settings import Settings
from radpair.core.store import InstanceStore
from radpair.pipeline.analysis import StudyAnalysis, enqueue_stable_studies
from radpair.pipeline.delivery import Outbox
from radpair.pipeline.jobs import JobQueue, QueuePolicy
from radpair.pipeline.workers import Handler, WorkerPool

log = logging.getLogger(__name__)

NO_MODEL_SERVER = "not run: no model server (triton.mode = \"off\"); configure triton.mode to analyse"


class PipelineService:
    """A ``radpair serve`` component: ``start(scheduler)`` / ``stop()``.

    ``models`` is the model server (the composition root passes Triton's gateway); without one
    (``triton.mode = "off"``) no inference job is run: they stay pending, with :data:`NO_MODEL_SERVER`
    as their reason, until a server is configured.
    """

    name = "pipeline"

    def __init__(self, settings: Settings, engine: Engine, models: ModelGateway | None) -> None:
        self.settings = settings
        self.sessions = session_factory(engine)
        p = settings.pipeline
        self.queue = JobQueue(self.sessions, QueuePolicy(p.lease_seconds, p.max_attempts, p.backoff_base,
                                                          p.backoff_max, p.retry_horizon))
        store = InstanceStore(settings.store_dir)
        handlers: dict[str, Handler] = {"delivery": Outbox(self.sessions, store, p.destinations)}
        if models is not None:
            handlers["inference"] = StudyAnalysis(settings, self.sessions, store, models)
        self.inference = models is not None
        self.workers = WorkerPool(self.queue, handlers, p.workers, p.poll_interval, p.heartbeat_interval)

    def start(self, scheduler: BaseScheduler) -> None:
        if not self.settings.pipeline.enabled:
            log.info("pipeline disabled (pipeline.enabled = false)")
            return
        p = self.settings.pipeline
        scheduler.add_job(self._poll, "interval", seconds=p.poll_interval, id="pipeline-stable-studies",
                          max_instances=1, coalesce=True)
        scheduler.add_job(self.queue.expire_leases, "interval", seconds=max(p.lease_seconds / 4, 1.0),
                          id="pipeline-lease-expiry", max_instances=1, coalesce=True)
        self._release_dead_workers()
        self.queue.expire_leases()
        self.workers.start()
        log.info("pipeline: %d workers, %d routing rules, destinations: %s%s", p.workers, len(p.rules),
                 ", ".join(f"{d.name}={d.ae_title}@{d.host}:{d.port}" for d in p.destinations) or "none",
                 "" if self.inference else "; no model server (triton.mode = off): inference jobs wait")

    def _release_dead_workers(self) -> None:
        """Jobs held by a radpair process on this host that no longer exists (killed) run now,
        without waiting for their leases to expire."""
        for owner in self.queue.running_owners():
            host, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if host == socket.gethostname() and pid.isdigit() and not _process_alive(int(pid)):
                log.warning("worker %s is gone: %d job(s) back to the queue", owner, self.queue.release(owner))

    def _poll(self) -> None:
        if enqueue_stable_studies(self.sessions):
            self.workers.wake()
        if not self.inference:
            self.queue.mark_pending("inference", NO_MODEL_SERVER)

    def stop(self) -> None:
        self.workers.stop()


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (dead, not yet reaped by its parent) does not."""
    if Path("/proc/self/stat").is_file():
        try:
            return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
        except FileNotFoundError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
