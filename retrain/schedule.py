"""The retraining schedule of ``radpair serve``: an APScheduler cron trigger in the archive's SQL.

The job lives in the archive's own database (``SQLAlchemyJobStore``, table ``apscheduler_jobs``):
a restart keeps the next run time, runs a missed run once if it is within ``misfire_grace_time``
(``coalesce``), and never runs one twice. The stored job calls ``radpair.retrain:scheduled_retrain``
by reference, without arguments: it uses the settings of the process that runs it, never a pickled
copy of old ones.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine

from radpair.core.settings import Settings
from radpair.retrain.job import RetrainOutcome, run_retrain
from radpair.retrain.lock import RetrainBusy
from radpair.retrain.status import JOB_ID, JOBS_TABLE

log = logging.getLogger(__name__)

JOB_REFERENCE = "radpair.retrain:scheduled_retrain"
JOBSTORE = "retrain"

_service: RetrainService | None = None


def fire() -> None:
    """The cron job's work (reached through ``radpair.retrain.scheduled_retrain``)."""
    if _service is None:
        log.error("retrain: the cron job fired but no retrain component is running in this process")
        return
    _service.start_run("cron")


class RetrainService:
    """The ``radpair serve`` component: the cron job in the SQL job store."""

    name = "retrain"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._thread: threading.Thread | None = None

    def start(self, scheduler: BaseScheduler) -> None:
        global _service
        r = self.settings.retrain
        store = SQLAlchemyJobStore(engine=self.engine, tablename=JOBS_TABLE)
        store.start(scheduler, JOBSTORE)
        existing = store.lookup_job(JOB_ID)
        trigger = r.cron_trigger()
        wanted = (JOB_REFERENCE, str(trigger), str(trigger.timezone), r.misfire_grace_time, r.coalesce)
        if existing is not None and (not r.enabled or wanted != _job_signature(existing)):
            store.remove_job(JOB_ID)
            existing = None
        scheduler.add_jobstore(store, JOBSTORE)
        _service = self
        if not r.enabled:
            log.info("retrain: schedule disabled (retrain.enabled = false)")
            return
        if existing is None:
            scheduler.add_job(JOB_REFERENCE, trigger, id=JOB_ID, jobstore=JOBSTORE, name="retrain",
                              misfire_grace_time=r.misfire_grace_time, coalesce=r.coalesce, max_instances=1)
            log.info("retrain: scheduled '%s' (%s)", r.cron, r.timezone)
        else:
            log.info("retrain: schedule '%s' (%s) kept; next run %s", r.cron, r.timezone, existing.next_run_time)

    def start_run(self, trigger: str) -> None:
        """Run in a thread of its own: a run takes hours, and must not hold up the scheduler or a
        shutdown. If radpair stops mid-run, the run's heartbeat stops with it and the next run
        takes the abandoned run over once ``retrain.lock_lease`` has passed."""
        if self._thread is not None and self._thread.is_alive():
            log.info("retrain (%s): not started: this process's previous run is still going", trigger)
            return
        self._thread = threading.Thread(target=self.run, args=(trigger,), name="retrain", daemon=True)
        self._thread.start()

    def run(self, trigger: str) -> RetrainOutcome | None:
        try:
            return run_retrain(self.settings, self.engine, trigger)
        except RetrainBusy as exc:
            log.info("retrain (%s): not started: %s", trigger, exc)
        except Exception:
            log.exception("retrain (%s): run failed", trigger)
        return None

    def stop(self) -> None:
        global _service
        if _service is self:
            _service = None
        if self._thread is not None and self._thread.is_alive():
            log.warning("retrain: stopping during a run; it is abandoned and taken over by the next run")


def _job_signature(job: Any) -> tuple[str, str, str, int, bool]:
    return job.func_ref, str(job.trigger), str(job.trigger.timezone), job.misfire_grace_time, job.coalesce
