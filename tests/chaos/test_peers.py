"""Chaos with the peers radpair depends on, while its worker threads run on their own: each test
breaks a real process (Orthanc, a PACS whose disk fills, PostgreSQL), lets it recover, and counts
what arrived. Printed: how long deliveries were held up after the peer came back."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import func, select

from radpair.core.models import Job, JobState, Result
from radpair.pipeline.jobs import QueuePolicy
from radpair.pipeline.workers import WorkerPool
from tests.support.checks import wait_for
from tests.support.orthanc import Orthanc
from tests.support.outbox import analysed_study
from tests.support.postgres import PostgresServer
from tests.support.scp import ControlledSCP

# Waits every ~1 s while a peer is away (backoff capped at 1 s), so recovery is seen quickly.
FAST = QueuePolicy(lease_seconds=10.0, backoff_base=1.5, backoff_max=1.0)


def _pool(env: SimpleNamespace) -> WorkerPool:
    pool = WorkerPool(env.queue, {"delivery": env.pool.handlers["delivery"]}, 2, 0.1, 2.0)
    pool.start()
    return pool


def _jobs(env: SimpleNamespace) -> dict[JobState, int]:
    with env.sessions() as s:
        return dict(s.execute(select(Job.state, func.count()).where(Job.kind == "delivery").group_by(Job.state)).all())


def _results(env: SimpleNamespace) -> list[str]:
    with env.sessions() as s:
        return sorted(s.scalars(select(Result.sop_instance_uid)))


def _waited(env: SimpleNamespace) -> bool:
    with env.sessions() as s:
        return s.scalar(select(func.min(Job.waits)).where(Job.kind == "delivery")) >= 2


def _all_done(env: SimpleNamespace) -> bool:
    return _jobs(env) == {JobState.DONE: 3}


def test_orthanc_stopped_and_restarted_gets_every_result_exactly_once(tmp_path: Path) -> None:
    pacs = Orthanc(tmp_path / "orthanc", aet="PACS").start()
    env = analysed_study(tmp_path, [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1",
                                     "port": pacs.dicom_port}], FAST)
    pacs.stop()
    pool = _pool(env)
    try:
        wait_for("deliveries to wait for the stopped Orthanc", lambda: _waited(env), timeout=60)
        pacs.start()
        back = time.monotonic()
        wait_for("every result delivered", lambda: _all_done(env), timeout=60)
        print(f"orthanc outage: results delivered {time.monotonic() - back:.1f} s after it was back")
    finally:
        pool.stop()
    try:
        in_pacs = sorted(i["SOPInstanceUID"] for i in pacs.instances_of_study(env.study_uid))
        assert in_pacs == _results(env) and len(pacs.get("/instances")) == 3
    finally:
        pacs.stop()
        env.engine.dispose()


def test_pacs_out_of_resources_then_recovering_gets_every_result_exactly_once(tmp_path: Path) -> None:
    scp = ControlledSCP(tmp_path / "scp").start()
    env = analysed_study(tmp_path, [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}], FAST)
    scp.answer(0xA700)
    pool = _pool(env)
    try:
        wait_for("deliveries to wait for the full PACS", lambda: _waited(env), timeout=60)
        scp.answer(None)
        back = time.monotonic()
        wait_for("every result delivered", lambda: _all_done(env), timeout=60)
        print(f"PACS 0xA700: results delivered {time.monotonic() - back:.1f} s after it recovered; "
              f"{sum(1 for s, _ in scp.requests() if s == 0xA700)} refusals before")
    finally:
        pool.stop()
        scp.stop()
    assert sorted(scp.stored()) == _results(env), "each result acknowledged exactly once"
    with env.sessions() as s:
        assert s.scalar(select(func.max(Job.attempts)).where(Job.kind == "delivery")) == 1
    env.engine.dispose()


def test_postgresql_restarted_during_job_claiming_leaves_no_job_stuck(tmp_path: Path,
                                                                      postgres_server: PostgresServer) -> None:
    scp = ControlledSCP(tmp_path / "scp").start()
    url = postgres_server.create_database("radpair_chaos_claims")
    env = analysed_study(tmp_path, [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}],
                         FAST, database_url=url)
    scp.answer(0xA700)  # the workers claim, wait and claim again, round and round
    pool = _pool(env)
    try:
        wait_for("the workers to be claiming", lambda: _waited(env), timeout=60)
        postgres_server.restart()  # every connection is cut, some in the middle of a claim
        scp.answer(None)
        back = time.monotonic()

        def recovered() -> bool:  # what the service's scheduler runs every lease/4 s
            env.queue.expire_leases()
            return _all_done(env)

        wait_for("every result delivered", recovered, timeout=90)
        print(f"PostgreSQL restart: results delivered {time.monotonic() - back:.1f} s after it was back")
    finally:
        pool.stop()
        scp.stop()
    assert sorted(scp.stored()) == _results(env)
    with env.sessions() as s:
        assert s.scalar(select(func.count()).where(Job.state == JobState.RUNNING)) == 0
    env.engine.dispose()
