"""The cross-process retraining lock: at most one retraining run at a time, across processes.

The lock is the run's own row: a :class:`core.models.RetrainRun` inserted with ``active = 1``.
The column has a unique index, so of two processes inserting at once exactly one commits and the
other gets an integrity error — an atomic insert that works the same on SQLite and PostgreSQL and
survives any number of radpair processes (``serve`` and ``retrain --now`` alike). While the run
works, a thread renews its heartbeat; a run whose heartbeat is older than the lease (its process
was killed) is marked failed and its slot freed by the next taker.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import RetrainRun, utcnow

log = logging.getLogger(__name__)


class RetrainBusy(RuntimeError):
    """Another retraining run holds the lock; the message says which and since when."""


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:100]


def acquire(sessions: sessionmaker[Session], trigger: str, lease: float) -> int:
    """Insert the active run row (the lock) and return its id, or raise :class:`RetrainBusy`."""
    now = utcnow()
    with sessions.begin() as session:
        abandoned = session.execute(
            update(RetrainRun)
            .where(RetrainRun.active == 1, RetrainRun.heartbeat_at < now - dt.timedelta(seconds=lease))
            .values(active=None, outcome="failed", finished_at=now,
                    reason=f"abandoned: no heartbeat for {lease:.0f} s (its process died)")
            .returning(RetrainRun.id)
        ).scalars().all()
    for run_id in abandoned:
        log.warning("retrain: run #%d was abandoned (no heartbeat for %.0f s); taking over", run_id, lease)
    try:
        with sessions.begin() as session:
            run = RetrainRun(trigger=trigger, owner=owner_name(), active=1, started_at=now, heartbeat_at=now)
            session.add(run)
            session.flush()
            return run.id
    except IntegrityError:
        with sessions() as session:
            holder = session.scalars(select(RetrainRun).where(RetrainRun.active == 1)).first()
        if holder is None:  # it finished between our insert and this read
            raise RetrainBusy("another retraining run held the lock a moment ago") from None
        raise RetrainBusy(f"retraining run #{holder.id} ({holder.trigger}, {holder.owner}) has been running "
                          f"since {holder.started_at:%Y-%m-%d %H:%M:%S} UTC") from None


def heartbeat(sessions: sessionmaker[Session], run_id: int) -> None:
    with sessions.begin() as session:
        session.execute(update(RetrainRun).where(RetrainRun.id == run_id, RetrainRun.active == 1)
                        .values(heartbeat_at=utcnow()))


def release(sessions: sessionmaker[Session], run_id: int, outcome: str, reason: str, **fields: int) -> None:
    """Record the run's outcome and free the slot."""
    with sessions.begin() as session:
        session.execute(update(RetrainRun).where(RetrainRun.id == run_id)
                        .values(active=None, outcome=outcome, reason=reason, finished_at=utcnow(), **fields))


@contextmanager
def held(sessions: sessionmaker[Session], trigger: str, lease: float) -> Iterator[int]:
    """Hold the lock for the ``with`` block, heartbeating every quarter lease.

    The caller records the outcome with :func:`release`; if the block raises first, the run is
    released as failed with the error as its reason.
    """
    run_id = acquire(sessions, trigger, lease)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease / 4):
            try:
                heartbeat(sessions, run_id)
            except Exception:  # a database hiccup must not kill the run; the next beat retries
                log.exception("retrain: heartbeat of run #%d failed", run_id)

    thread = threading.Thread(target=beat, name=f"retrain-heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield run_id
    except BaseException as exc:
        release(sessions, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        stop.set()
        thread.join()
