"""What ``radpair status`` shows of retraining: the next scheduled run and the last run's outcome.

Read straight from the archive's SQL (APScheduler's job table and ``retrain_runs``) without a
scheduler or the training stack, so ``radpair status`` stays quick.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, MetaData, Table, inspect, select

from radpair.core.db import session_factory
from radpair.core.models import RetrainRun

JOB_ID = "radpair.retrain"
JOBS_TABLE = "apscheduler_jobs"


def next_run_time(engine: Engine) -> dt.datetime | None:
    """When the stored cron job fires next (None: not scheduled), read without a scheduler."""
    if not inspect(engine).has_table(JOBS_TABLE):
        return None
    jobs = Table(JOBS_TABLE, MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        stamp = conn.execute(select(jobs.c.next_run_time).where(jobs.c.id == JOB_ID)).scalar()
    return None if stamp is None else dt.datetime.fromtimestamp(stamp, dt.timezone.utc)


def summary(engine: Engine) -> str:
    """Two lines: the next scheduled run and the last run's outcome."""
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
