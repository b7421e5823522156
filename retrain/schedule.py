"""The retraining schedule of ``radpair serve``: an APScheduler cron trigger in the archive's SQL.

The job lives in the archive's own database (``SQLAlchemyJobStore``, table ``apscheduler_jobs``):
a restart keeps the next run time, runs a missed run once if it is within ``misfire_grace_time``
(``coalesce``), and never runs one twice. The stored job calls ``radpair.retrain:scheduled_retrain``
by reference, without arguments: it uses the settings of the process that runs it, never a pickled
copy of old ones.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine, MetaData, Table, inspect, select

from radpair.core.db import session_factory
from radpair.core.models import RetrainRun
from radpair.core.settings import Settings
from radpair.retrain.job import RetrainOutcome, run_retrain
from radpair.retrain.lock import RetrainBusy

log = logging.getLogger(__name__)

JOB_ID = "radpair.retrain"
JOB_REFERENCE = "radpair.retrain:scheduled_retrain"
JOBSTORE = "retrain"
JOBS_TABLE = "apscheduler_jobs"

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


def next_run_time(engine: Engine) -> dt.datetime | None:
    """When the stored cron job fires next (None: not scheduled), read without a scheduler."""
    if not inspect(engine).has_table(JOBS_TABLE):
        return None
    jobs = Table(JOBS_TABLE, MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        stamp = conn.execute(select(jobs.c.next_run_time).where(jobs.c.id == JOB_ID)).scalar()
    return None if stamp is None else dt.datetime.fromtimestamp(stamp, dt.timezone.utc)


def summary(engine: Engine) -> str:
    """Two lines for ``radpair status``: the next scheduled run and the last run's outcome."""
    upcoming = next_run_time(engine)
    with session_factory(engine)() as session:
        last = session.scalars(select(RetrainRun).order_by(RetrainRun.id.desc()).limit(1)).first()
    lines = [f"retrain next run: {upcoming:%Y-%m-%d %H:%M:%S} UTC" if upcoming else "retrain next run: not scheduled"]
    if last is None:
        lines.append("retrain last run: none yet")
    else:
        lines.append(f"retrain last run: #{last.id} {last.trigger} {last.started_at:%Y-%m-%d %H:%M:%S} UTC "
                     f"{last.outcome} — {last.reason}")
    return "\n".join(lines) + "\n"
