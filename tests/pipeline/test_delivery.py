"""The outbox against a real Orthanc: down → waits, back → delivered once; a dead peer blocks nobody."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.models import Delivery, Job, JobState, Result, utcnow
from radpair.core.settings import load_settings
from radpair.core.store import InstanceStore
from radpair.pipeline.analysis import StudyAnalysis, enqueue_stable_studies
from radpair.pipeline.delivery import Outbox
from radpair.pipeline.jobs import JobQueue, QueuePolicy
from radpair.pipeline.workers import WorkerPool
from tests.support.archive import archive_files, mark_stable
from tests.support.orthanc import Orthanc
from tests.support.dicom import write_head_series
from tests.support.models import BrightestVoxelModel
from tests.support.ports import free_port



@pytest.fixture
def outbox(tmp_path: Path) -> SimpleNamespace:
    pacs = Orthanc(tmp_path / "orthanc", aet="PACS").start()
    engine = make_engine(f"sqlite:///{tmp_path / 'radpair.db'}")
    upgrade(engine)
    settings = load_settings(None, environ={}, overrides={
        "data_dir": str(tmp_path / "data"),
        "pipeline.destinations": [
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.dicom_port},
            {"name": "offline", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()},
        ],
        "pipeline.rules": [{"name": "all", "destinations": ["pacs", "offline"]}],
    })
    sessions = session_factory(engine)
    store = InstanceStore(settings.store_dir)
    queue = JobQueue(sessions, QueuePolicy())
    handlers = {"inference": StudyAnalysis(settings, sessions, store, BrightestVoxelModel()),
                "delivery": Outbox(sessions, store, settings.pipeline.destinations)}
    study_uid = archive_files(sessions, store, write_head_series(tmp_path / "mr"))
    mark_stable(sessions, study_uid)
    enqueue_stable_studies(sessions)
    pool = WorkerPool(queue, handlers, 1, 0.1, 5.0)
    pool.run_one(queue.claim("t", ("inference",)), "t")
    yield SimpleNamespace(pacs=pacs, sessions=sessions, queue=queue, pool=pool, study_uid=study_uid)
    pacs.stop()
    engine.dispose()


def run_due_deliveries(env: SimpleNamespace) -> None:
    while (job := env.queue.claim("t", ("delivery",))) is not None:
        env.pool.run_one(job, "t")


def make_all_due(env: SimpleNamespace) -> None:
    with env.sessions.begin() as s:
        s.execute(update(Job).where(Job.state == JobState.PENDING).values(next_attempt_at=utcnow()))


def delivery_states(env: SimpleNamespace) -> dict[str, set[str]]:
    with env.sessions() as s:
        states: dict[str, set[str]] = {}
        for d in s.scalars(select(Delivery)):
            states.setdefault(d.destination, set()).add(d.state)
        return states


def test_pacs_down_then_back_gets_each_result_exactly_once(outbox: SimpleNamespace) -> None:
    env = outbox
    env.pacs.stop()
    run_due_deliveries(env)
    assert delivery_states(env) == {"pacs": {"pending"}, "offline": {"pending"}}
    with env.sessions() as s:
        jobs = s.scalars(select(Job).where(Job.kind == "delivery")).all()
        assert {(j.state, j.attempts) for j in jobs} == {(JobState.PENDING, 0)}, "an unreachable peer uses no attempt"
        assert all(j.waits == 1 and "PeerUnavailable" in j.last_error for j in jobs)

    env.pacs.start()
    make_all_due(env)
    run_due_deliveries(env)
    assert delivery_states(env) == {"pacs": {"delivered"}, "offline": {"pending"}}, "a dead peer blocks nobody"
    with env.sessions() as s:
        sent = {r.sop_instance_uid: r.kind for r in s.scalars(select(Result))}
    in_pacs = env.pacs.instances_of_study(env.study_uid)
    assert sorted(i["SOPInstanceUID"] for i in in_pacs) == sorted(sent)
    assert {i["SOPClassUID"] for i in in_pacs} == {
        "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34", "1.2.840.10008.5.1.4.1.1.30"}

    # The acknowledgement was lost (say): the same delivery runs again and sends the same UIDs.
    with env.sessions.begin() as s:
        s.execute(update(Job).where(Job.kind == "delivery").values(state=JobState.PENDING, next_attempt_at=utcnow()))
    run_due_deliveries(env)
    again = env.pacs.instances_of_study(env.study_uid)
    assert sorted(i["SOPInstanceUID"] for i in again) == sorted(sent), "no duplicates in the PACS"
    assert len(env.pacs.get("/instances")) == 3
