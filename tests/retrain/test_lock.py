"""The retraining lock (a RetrainRun row with a unique ``active`` slot), on SQLite and PostgreSQL,
raced by real processes."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap

import pytest
from sqlalchemy import select, update

from radpair.core.models import RetrainRun, utcnow
from radpair.retrain.lock import RetrainBusy, acquire, held, release


def test_second_acquire_is_refused_until_release(sessions) -> None:
    first = acquire(sessions, "manual", lease=60)
    with pytest.raises(RetrainBusy, match=f"run #{first} \\(manual"):
        acquire(sessions, "cron", lease=60)
    release(sessions, first, "skipped", "test")
    second = acquire(sessions, "cron", lease=60)
    release(sessions, second, "skipped", "test")
    with sessions() as session:
        runs = session.scalars(select(RetrainRun).order_by(RetrainRun.id)).all()
    assert [(r.trigger, r.outcome, r.active) for r in runs] == [("manual", "skipped", None), ("cron", "skipped", None)]


def test_abandoned_run_is_taken_over_after_its_lease(sessions) -> None:
    dead = acquire(sessions, "cron", lease=30)
    with sessions.begin() as session:  # its process died 31 s ago: no heartbeat since
        session.execute(update(RetrainRun).where(RetrainRun.id == dead)
                        .values(heartbeat_at=utcnow() - dt.timedelta(seconds=31)))
    taker = acquire(sessions, "manual", lease=30)
    with sessions() as session:
        old = session.get(RetrainRun, dead)
        assert (old.outcome, old.active) == ("failed", None)
        assert "abandoned" in old.reason
        assert session.get(RetrainRun, taker).active == 1


def test_failure_inside_held_block_records_the_error(sessions) -> None:
    with pytest.raises(ZeroDivisionError):
        with held(sessions, "manual", lease=60):
            1 / 0
    with sessions() as session:
        run = session.scalars(select(RetrainRun)).one()
    assert (run.outcome, run.active) == ("failed", None)
    assert "ZeroDivisionError" in run.reason


RACER = textwrap.dedent("""
    import sys, time
    from radpair.core.db import make_engine, session_factory
    from radpair.retrain.lock import RetrainBusy, acquire
    sessions = session_factory(make_engine(sys.argv[1]))
    while time.time() < float(sys.argv[2]):
        time.sleep(0.001)
    try:
        acquire(sessions, "manual", lease=60)
        print("won")
    except RetrainBusy:
        print("busy")
""")


def test_processes_racing_for_the_lock_exactly_one_wins(sessions, database_url: str) -> None:
    import time

    start_at = time.time() + 4  # every process imported and waiting: they insert within a millisecond
    procs = [subprocess.Popen([sys.executable, "-c", RACER, database_url, str(start_at)], stdout=subprocess.PIPE,
                              text=True) for _ in range(4)]
    answers = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert answers == ["busy", "busy", "busy", "won"]
    with sessions() as session:
        assert len(session.scalars(select(RetrainRun)).all()) == 1
