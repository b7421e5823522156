"""The job queue's state machine on SQLite and a real PostgreSQL: claim, lease, backoff, dead letter."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.models import Job, JobState, utcnow
from radpair.pipeline.jobs import JobQueue, QueuePolicy, enqueue, requeue


@pytest.fixture
def sessions(database_url: str) -> sessionmaker[Session]:
    engine = make_engine(database_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def make_due(sessions: sessionmaker[Session], job_id: int) -> None:
    with sessions.begin() as s:
        s.execute(update(Job).where(Job.id == job_id).values(next_attempt_at=utcnow()))


def test_enqueue_is_idempotent_on_key(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as s:
        assert enqueue(s, "inference", "inference:1.2.3:1", {"a": 1}) is not None
        assert enqueue(s, "inference", "inference:1.2.3:1", {"a": 2}) is None
    with sessions() as s:
        assert s.scalar(select(Job.payload)) == '{"a": 1}'


def test_backoff_then_dead_letter_with_last_error(sessions: sessionmaker[Session]) -> None:
    queue = JobQueue(sessions, QueuePolicy(max_attempts=3, backoff_base=2.0, backoff_max=5.0))
    with sessions.begin() as s:
        job_id = enqueue(s, "delivery", "k").id
    delays = []
    for attempt in (1, 2):
        claimed = queue.claim("w1")
        assert claimed is not None and claimed.attempts == attempt
        before = utcnow()
        assert queue.fail(claimed.id, "w1", f"boom {attempt}") is JobState.PENDING
        assert queue.claim("w1") is None, "a backed-off job is not due yet"
        with sessions() as s:
            due = s.get(Job, job_id).next_attempt_at.replace(tzinfo=dt.timezone.utc)
        delays.append((due - before).total_seconds())
        make_due(sessions, job_id)
    assert 1.5 < delays[0] < 2.5 and 3.5 < delays[1] < 4.5, delays
    claimed = queue.claim("w1")
    assert queue.fail(claimed.id, "w1", "boom 3") is JobState.DEAD
    assert queue.claim("w1") is None
    with sessions() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.attempts, job.last_error) == (JobState.DEAD, 3, "boom 3")


def test_waiting_for_an_unreachable_peer_uses_no_attempt(sessions: sessionmaker[Session]) -> None:
    queue = JobQueue(sessions, QueuePolicy(max_attempts=1))
    with sessions.begin() as s:
        job_id = enqueue(s, "delivery", "k").id
    for _ in range(3):
        claimed = queue.claim("w1")
        assert queue.wait(claimed.id, "w1", "PACS down")
        make_due(sessions, job_id)
    claimed = queue.claim("w1")
    assert claimed.attempts == 1
    assert queue.complete(claimed.id, "w1")
    with sessions() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.waits) == (JobState.DONE, 3)


def test_expired_lease_returns_job_and_old_owner_cannot_settle(sessions: sessionmaker[Session]) -> None:
    queue = JobQueue(sessions, QueuePolicy(lease_seconds=60, max_attempts=2))
    with sessions.begin() as s:
        job_id = enqueue(s, "inference", "k").id
    first = queue.claim("dead-worker")
    assert queue.expire_leases() == 0, "lease still current"
    assert queue.heartbeat(first.id, "dead-worker")
    with sessions.begin() as s:
        s.execute(update(Job).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
    assert queue.expire_leases() == 1
    second = queue.claim("w2")
    assert second.id == job_id and second.attempts == 2
    assert not queue.heartbeat(job_id, "dead-worker")
    assert not queue.complete(job_id, "dead-worker")
    assert queue.complete(job_id, "w2")
    # A job whose lease expires on its last attempt is dead-lettered, not retried forever.
    with sessions.begin() as s:
        other = enqueue(s, "inference", "k2").id
    for owner in ("a", "b"):
        queue.claim(owner)
        with sessions.begin() as s:
            s.execute(update(Job).where(Job.id == other).values(lease_expires_at=utcnow() - dt.timedelta(seconds=1)))
        queue.expire_leases()
    with sessions() as s:
        job = s.get(Job, other)
        assert job.state is JobState.DEAD and "expired" in job.last_error


def test_concurrent_workers_claim_each_job_once(sessions: sessionmaker[Session]) -> None:
    queue = JobQueue(sessions, QueuePolicy())
    with sessions.begin() as s:
        for i in range(40):
            enqueue(s, "inference", f"k{i}")
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := queue.claim(name)) is not None:
            with lock:
                claimed.append(job.id)
            queue.complete(job.id, name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 40
    with sessions() as s:
        assert set(s.scalars(select(Job.state))) == {JobState.DONE}


def test_release_returns_a_dead_workers_jobs_at_once(sessions: sessionmaker[Session]) -> None:
    queue = JobQueue(sessions, QueuePolicy(lease_seconds=3600))
    with sessions.begin() as s:
        enqueue(s, "inference", "k")
    queue.claim("host:1:w0")
    assert queue.running_owners() == {"host:1:w0"}
    assert queue.release("host:1:w0") == 1
    assert queue.claim("host:2:w0").attempts == 2


def test_waits_stop_at_the_retry_horizon_counted_in_backoff_not_attempts(sessions: sessionmaker[Session]) -> None:
    policy = QueuePolicy(max_attempts=1, backoff_base=2.0, backoff_max=8.0, retry_horizon=20.0)
    assert [policy.waited(n) for n in range(5)] == [0, 2, 6, 14, 22]
    queue = JobQueue(sessions, policy)
    with sessions.begin() as s:
        job_id = enqueue(s, "delivery", "k").id
    states = []
    for _ in range(5):
        claimed = queue.claim("w1")
        states.append(queue.wait(claimed.id, "w1", f"PeerUnavailable: down {_}"))
        make_due(sessions, job_id)
    assert states == [JobState.PENDING] * 4 + [JobState.DEAD], "max_attempts=1 does not apply to waits"
    with sessions() as s:
        job = s.get(Job, job_id)
        assert job.last_error == "gave up after 4 waits over 0.0 h: PeerUnavailable: down 4"
    assert requeue(sessions, dead=True) == [job_id]
    with sessions() as s:
        job = s.get(Job, job_id)
        assert (job.state, job.attempts, job.waits) == (JobState.PENDING, 0, 0)
    assert queue.claim("w1").id == job_id, "due at once"


def _stable_study(tmp_path, database_url: str):  # noqa: ANN001, ANN202 - (settings, sessions, queue)
    from radpair.core.settings import load_settings
    from radpair.core.store import InstanceStore
    from tests.support.archive import archive_files, mark_stable
    from tests.support.dicom import write_head_series
    from tests.support.ports import free_port

    settings = load_settings(None, environ={}, overrides={
        "data_dir": str(tmp_path / "data"), "database.url": database_url, "triton.mode": "remote",
        "triton.url": f"127.0.0.1:{free_port()}", "triton.retries": 0})
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    mark_stable(sessions, archive_files(sessions, InstanceStore(settings.store_dir),
                                        write_head_series(tmp_path / "mr")))
    return settings, engine, sessions


def test_inference_waits_while_triton_is_down_and_is_not_run_when_triton_is_off(tmp_path, database_url: str) -> None:
    from radpair.pipeline.service import NO_MODEL_SERVER, PipelineService
    from radpair.serving.gateway import TritonGateway

    settings, engine, sessions = _stable_study(tmp_path, database_url)
    off = PipelineService(settings, engine, None)  # what `radpair serve` builds for triton.mode = "off"
    off._poll()
    assert off.queue.claim("w", tuple(off.workers.handlers)) is None, "no worker of triton.mode=off takes it"
    with sessions() as s:
        (job,) = s.scalars(select(Job)).all()
        assert (job.kind, job.state, job.last_error) == ("inference", JobState.PENDING, NO_MODEL_SERVER)

    # Triton configured but not running (a real client to a closed port): the job waits, no attempt used.
    on = PipelineService(settings, engine, TritonGateway(settings))
    claimed = on.queue.claim("w", ("inference",))
    on.workers.run_one(claimed, "w")
    with sessions() as s:
        job = s.get(Job, claimed.id)
        assert (job.state, job.attempts, job.waits) == (JobState.PENDING, 0, 1)
        assert job.last_error.startswith("TritonUnavailable:")
    engine.dispose()


def test_routing_reads_files_outside_any_transaction(tmp_path) -> None:  # noqa: ANN001
    """A file that does not answer while the pipeline routes a study (a FIFO nobody writes yet:
    a hung NFS read, a deflate bomb being inflated) must not stall other writers: on SQLite every
    transaction holds the write lock, so a transaction open across the read would block this
    UPDATE until the read ends (before, routing read headers inside its session)."""
    import os

    from radpair.core.models import Instance, Study
    from radpair.core.store import InstanceStore
    from radpair.pipeline.rules import Route, route

    settings, engine, sessions = _stable_study(tmp_path, f"sqlite:///{tmp_path / 'radpair.db'}")
    store = InstanceStore(settings.store_dir)
    with sessions() as s:
        study = s.scalars(select(Study)).one()
        first = store.absolute(min(s.scalars(select(Instance.path))))
    data = first.read_bytes()
    first.unlink()
    os.mkfifo(first)
    routed: list[object] = []
    reader = threading.Thread(target=lambda: routed.append(route(settings, sessions, study, store)), daemon=True)
    reader.start()
    writer = threading.Thread(target=lambda: make_due(sessions, 0), daemon=True)
    writer.start()
    writer.join(20)
    blocked_writer = writer.is_alive()
    fifo = os.open(first, os.O_RDWR)  # never blocks, reader or not: let the routing read finish
    os.write(fifo, data)
    reader.join(20)
    writer.join(20)
    os.close(fifo)
    assert not blocked_writer, "a write waited for the routing's file read"
    assert isinstance(routed[0], Route)
    engine.dispose()
