"""The durable job queue: rows in the ``jobs`` table, claimed with a lease, retried with backoff.

State machine::

    pending --claim--> running --complete--> done
       ^                  |  \\--skip-----> skipped
       |                  |---fail (attempts < max)--> pending (next_attempt_at = now + backoff)
       |                  |---fail (attempts = max)--> dead (last_error kept)
       |                  |---bury (permanent refusal)--> dead (last_error: the reason)
       |                  |---wait (peer unreachable or out of resources)--> pending (backoff,
       |                  |        attempts not used up) or dead once it has waited retry_horizon s
       +---lease expired (worker died)----+
    dead --requeue (``radpair jobs retry``)--> pending (attempts and waits reset)

Claiming is one short transaction: ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
workers never wait for each other; on SQLite ``core.db`` begins every transaction with
``BEGIN IMMEDIATE``, which serialises the claim (SQLAlchemy renders no FOR UPDATE there). Every
state change after the claim checks the lease owner, so a worker that lost its lease (it was
too slow and another worker took the job) cannot overwrite the new owner's outcome.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import Job, JobState, utcnow

log = logging.getLogger(__name__)


class Skip(Exception):
    """Raised by a handler: the job has nothing to do; the message (why) is kept on the job."""


class Permanent(Exception):
    """Raised by a handler: retrying cannot help (e.g. the PACS refused the instance for good);
    the job goes to the dead letter at once with the message as its reason."""


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    attempts: int
    study_pk: int | None
    generation: int | None


@dataclass(frozen=True)
class QueuePolicy:
    lease_seconds: float = 60.0
    max_attempts: int = 5
    backoff_base: float = 2.0
    backoff_max: float = 300.0
    # A job whose peer stays unreachable (or out of resources) waits this long in all, then dies.
    retry_horizon: float = 86400.0

    def backoff(self, attempt: int) -> dt.timedelta:
        """Delay before retry number ``attempt`` (1-based): base ** attempt, capped."""
        return dt.timedelta(seconds=min(self.backoff_base ** min(attempt, 64), self.backoff_max))

    def waited(self, waits: int) -> float:
        """Seconds a job has at least spent backing off after ``waits`` waits (the sum of the delays):
        counted from the waits, not the clock, so a re-queued job gets the whole horizon again."""
        return sum(self.backoff(k).total_seconds() for k in range(1, waits + 1))


def enqueue(
    session: Session,
    kind: str,
    key: str,
    payload: dict[str, Any] | None = None,
    study_pk: int | None = None,
    generation: int | None = None,
    state: JobState = JobState.PENDING,
    reason: str = "",
) -> Job | None:
    """Add a job in the caller's transaction unless one with ``key`` exists (then None).

    A savepoint keeps a concurrent duplicate insert from rolling back the caller's other work.
    """
    if session.scalar(select(Job.id).where(Job.key == key)) is not None:
        return None
    job = Job(kind=kind, key=key, payload=json.dumps(payload or {}), study_pk=study_pk,
              generation=generation, state=state, last_error=reason, next_attempt_at=utcnow(),
              finished_at=utcnow() if state is not JobState.PENDING else None)
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        return None
    return job


class JobQueue:
    """Claim, heartbeat and settle jobs; each call is its own short transaction."""

    def __init__(self, sessions: sessionmaker[Session], policy: QueuePolicy) -> None:
        self.sessions = sessions
        self.policy = policy

    def claim(self, owner: str, kinds: tuple[str, ...] | None = None) -> ClaimedJob | None:
        """Take the due pending job that has waited longest, or None."""
        now = utcnow()
        with self.sessions.begin() as session:
            query = select(Job).where(Job.state == JobState.PENDING, Job.next_attempt_at <= now)
            if kinds:
                query = query.where(Job.kind.in_(kinds))
            job = session.scalars(
                query.order_by(Job.next_attempt_at, Job.id).limit(1).with_for_update(skip_locked=True)
            ).first()
            if job is None:
                return None
            job.state = JobState.RUNNING
            job.attempts += 1
            job.lease_owner = owner
            job.heartbeat_at = now
            job.lease_expires_at = now + dt.timedelta(seconds=self.policy.lease_seconds)
            return ClaimedJob(job.id, job.kind, job.key, json.loads(job.payload), job.attempts,
                              job.study_pk, job.generation)

    def _settle(self, job_id: int, owner: str, **values: Any) -> bool:
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.lease_owner == owner, Job.state == JobState.RUNNING)
                .values(**values)
            )
            return result.rowcount == 1

    def heartbeat(self, job_id: int, owner: str) -> bool:
        """Extend the lease; False means the lease was lost and the work must be abandoned."""
        now = utcnow()
        return self._settle(job_id, owner, heartbeat_at=now,
                            lease_expires_at=now + dt.timedelta(seconds=self.policy.lease_seconds))

    def complete(self, job_id: int, owner: str, state: JobState = JobState.DONE, note: str = "") -> bool:
        return self._settle(job_id, owner, state=state, finished_at=utcnow(), lease_owner=None,
                            lease_expires_at=None, last_error=note)

    def fail(self, job_id: int, owner: str, error: str) -> JobState | None:
        """Record a failed attempt: back to pending after a backoff, or dead after max_attempts."""
        with self.sessions.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.lease_owner != owner or job.state is not JobState.RUNNING:
                return None
            job.last_error = error[-4000:]
            job.lease_owner = None
            job.lease_expires_at = None
            if job.attempts >= self.policy.max_attempts:
                job.state = JobState.DEAD
                job.finished_at = utcnow()
            else:
                job.state = JobState.PENDING
                job.next_attempt_at = utcnow() + self.policy.backoff(job.attempts)
            return job.state

    def wait(self, job_id: int, owner: str, error: str) -> JobState | None:
        """Retry later without using up an attempt: the job's peer (PACS, Triton) is unreachable or
        out of resources. Pending again after a backoff, or dead once it has waited ``retry_horizon``."""
        with self.sessions.begin() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.lease_owner != owner or job.state is not JobState.RUNNING:
                return None
            job.attempts -= 1
            job.lease_owner = None
            job.lease_expires_at = None
            waited = self.policy.waited(job.waits)
            if waited >= self.policy.retry_horizon:
                job.state = JobState.DEAD
                job.finished_at = utcnow()
                job.last_error = f"gave up after {job.waits} waits over {waited / 3600:.1f} h: {error}"[-4000:]
            else:
                job.waits += 1
                job.last_error = error[-4000:]
                job.state = JobState.PENDING
                job.next_attempt_at = utcnow() + self.policy.backoff(job.waits)
            return job.state

    def bury(self, job_id: int, owner: str, reason: str) -> bool:
        """Dead-letter a job at once: its handler knows that retrying cannot help."""
        return self._settle(job_id, owner, state=JobState.DEAD, finished_at=utcnow(), lease_owner=None,
                            lease_expires_at=None, last_error=reason[-4000:])

    def mark_pending(self, kind: str, reason: str) -> int:
        """Note on every pending job of ``kind`` why it is not run (e.g. no model server configured)."""
        with self.sessions.begin() as session:
            return session.execute(
                update(Job).where(Job.kind == kind, Job.state == JobState.PENDING, Job.last_error != reason)
                .values(last_error=reason)
            ).rowcount

    def running_owners(self) -> set[str]:
        with self.sessions() as session:
            return set(session.scalars(select(Job.lease_owner).where(Job.state == JobState.RUNNING).distinct()))

    def release(self, owner: str) -> int:
        """End the leases of a worker known to be gone (its process died), so its jobs run now."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(Job).where(Job.state == JobState.RUNNING, Job.lease_owner == owner)
                .values(lease_expires_at=utcnow() - dt.timedelta(seconds=1))
            )
        return self.expire_leases() if result.rowcount else 0

    def expire_leases(self) -> int:
        """Return running jobs whose worker stopped heartbeating to the queue (or to dead)."""
        now = utcnow()
        with self.sessions.begin() as session:
            stale = session.scalars(
                select(Job).where(Job.state == JobState.RUNNING, Job.lease_expires_at < now)
                .with_for_update(skip_locked=True)
            ).all()
            for job in stale:
                log.warning("job %d (%s) lost its lease held by %s", job.id, job.key, job.lease_owner)
                job.last_error = f"lease held by {job.lease_owner} expired (worker died or hung)"
                job.lease_owner = None
                job.lease_expires_at = None
                if job.attempts >= self.policy.max_attempts:
                    job.state = JobState.DEAD
                    job.finished_at = now
                    log.warning("job %d (%s) dead after %d attempts: %s", job.id, job.key, job.attempts,
                                job.last_error)
                else:
                    job.state = JobState.PENDING
                    job.next_attempt_at = now
            return len(stale)


def requeue(sessions: sessionmaker[Session], job_ids: Sequence[int] = (), dead: bool = False) -> list[int]:
    """Put the given dead (or pending: make them due now) jobs, or every dead job, back in the queue,
    with their attempts and waits reset; the previous reason stays in ``last_error`` until the next
    attempt. Done, skipped and running jobs are left alone. Returns the ids re-queued."""
    with sessions.begin() as session:
        query = select(Job).where(Job.state.in_((JobState.DEAD, JobState.PENDING)))
        query = query.where(Job.state == JobState.DEAD) if dead else query.where(Job.id.in_(list(job_ids)))
        jobs = session.scalars(query.with_for_update()).all()
        for job in jobs:
            log.warning("job %d (%s) re-queued by hand (was %s: %s)", job.id, job.key, job.state.value,
                        short_reason(job.last_error))
            job.state = JobState.PENDING
            job.attempts = 0
            job.waits = 0
            job.next_attempt_at = utcnow()
            job.finished_at = None
        return [job.id for job in jobs]


def short_reason(error: str) -> str:
    """The last line of a job's ``last_error`` (a traceback's last line is the exception)."""
    lines = error.strip().splitlines()
    return lines[-1] if lines else ""
