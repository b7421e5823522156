"""The cron schedule in the SQL job store: it fires, and a restart neither skips nor doubles a run.

Each "process" is a fresh APScheduler BackgroundScheduler with a fresh engine on the same
database — what a restarted ``radpair serve`` has. The job is the real retraining job; on an empty
archive it records a ``skipped`` run (too few new pairs) in a moment, which is what is counted.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy import select

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.models import RetrainRun
from radpair.core.settings import Settings, load_settings
from radpair.retrain.schedule import JOB_REFERENCE, RetrainService
from radpair.retrain.status import next_run_time, summary
from tests.support.checks import wait_for

EVERY = 10  # seconds between cron firings


def sleep_until(moment: dt.datetime) -> None:
    time.sleep(max(0.0, (moment - dt.datetime.now(dt.timezone.utc)).total_seconds()))


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return load_settings(environ={}, overrides={
        "data_dir": str(tmp_path / "data"), "database.url": database_url, "triton.mode": "off",
        "retrain.cron": f"*/{EVERY} * * * * *", "retrain.timezone": "Europe/Paris",
        "retrain.min_new_pairs": 1, "retrain.misfire_grace_time": 30})


@contextmanager
def serving(settings: Settings) -> Iterator[None]:
    """One radpair process's scheduler with the retrain component, stopped on exit."""
    engine = make_engine(settings.database_url)
    upgrade(engine)
    scheduler = BackgroundScheduler(timezone="UTC")
    service = RetrainService(settings, engine)
    service.start(scheduler)
    scheduler.start()
    try:
        yield
    finally:
        scheduler.shutdown(wait=True)
        service.stop()
        engine.dispose()


def test_cron_fires_and_a_restart_neither_skips_nor_doubles(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = session_factory(engine)

    def cron_runs() -> list[RetrainRun]:
        """Every cron-triggered run, once none is still in progress (the job runs in a thread)."""
        with sessions() as session:
            runs = session.scalars(select(RetrainRun).where(RetrainRun.trigger == "cron").order_by(RetrainRun.id)).all()
        return [] if any(r.outcome == "running" for r in runs) else runs

    with serving(settings):
        first = next_run_time(engine)
        assert first is not None and first.second % EVERY == 0
        wait_for("the first cron run", lambda: len(cron_runs()) == 1, EVERY + 30)
    assert cron_runs()[0].outcome == "skipped" and "min_new_pairs" in cron_runs()[0].reason
    missed = next_run_time(engine)
    assert missed > first
    sleep_until(missed + dt.timedelta(seconds=1))  # down while the next run was due

    with serving(settings):  # restarted within misfire_grace_time: the missed run runs, once
        wait_for("the missed run after the restart", lambda: len(cron_runs()) == 2, 30)
        assert next_run_time(engine) > missed
    after = next_run_time(engine)
    assert after - missed >= dt.timedelta(seconds=EVERY)

    with serving(settings):  # restarted again before the next due time: the run already done stays done
        time.sleep(1.0)  # the scheduler runs whatever is due at once, at start
        assert dt.datetime.now(dt.timezone.utc) < after, "test too slow: the next run came due"
        assert len(cron_runs()) == 2
    assert "retrain last run: #" in summary(engine)
    engine.dispose()


def test_changed_cron_expression_replaces_the_stored_schedule(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with serving(settings):
        pass
    nightly = load_settings(environ={}, overrides={
        "data_dir": str(settings.data_dir), "database.url": settings.database_url, "triton.mode": "off",
        "retrain.cron": "0 2 * * *", "retrain.timezone": "Europe/Paris"})
    with serving(nightly):
        upcoming = next_run_time(engine)
    local = upcoming.astimezone(dt.timezone(dt.timedelta(hours=1))) if upcoming else None
    assert local is not None and (local.hour, local.minute) in ((2, 0), (3, 0))  # CET or CEST
    engine.dispose()


def test_the_stored_job_reference_of_every_release_resolves() -> None:
    """Deployments store the job as this reference (since the first release): it must keep resolving."""
    from apscheduler.util import ref_to_obj

    import radpair.retrain

    assert JOB_REFERENCE == "radpair.retrain:scheduled_retrain"
    assert ref_to_obj(JOB_REFERENCE) is radpair.retrain.scheduled_retrain
