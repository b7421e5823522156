"""The outbox against real peers: Orthanc down → waits, back → delivered once; a dead peer blocks
nobody; a PACS answering 0xA700 (out of resources) → waits without using up attempts and gets
each result once when it recovers; 0xC000 → dead at once with the reason; a peer that stays away
past the retry horizon → dead, and `radpair jobs retry --dead` sends it once it is back."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select, update

from radpair.core.models import Delivery, Job, JobState, Result, utcnow
from radpair.pipeline.jobs import QueuePolicy
from tests.support.orthanc import Orthanc
from tests.support.outbox import analysed_study
from tests.support.ports import free_port
from tests.support.scp import ControlledSCP



@pytest.fixture
def outbox(tmp_path: Path) -> SimpleNamespace:
    pacs = Orthanc(tmp_path / "orthanc", aet="PACS").start()
    env = analysed_study(tmp_path, [
        {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": pacs.dicom_port},
        {"name": "offline", "ae_title": "NOBODY", "host": "127.0.0.1", "port": free_port()},
    ], QueuePolicy())
    env.pacs = pacs
    yield env
    pacs.stop()
    env.engine.dispose()


@pytest.fixture
def controlled(tmp_path: Path) -> SimpleNamespace:
    """The study's results go to one real SCP whose answer the test sets (tests/support/scp.py)."""
    scp = ControlledSCP(tmp_path / "scp").start()
    env = analysed_study(tmp_path, [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": scp.port}],
                         QueuePolicy(backoff_base=2.0, backoff_max=60.0, retry_horizon=30.0))
    env.scp = scp
    yield env
    scp.stop()
    env.engine.dispose()


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


def delivery_jobs(env: SimpleNamespace) -> list[Job]:
    with env.sessions() as s:
        return s.scalars(select(Job).where(Job.kind == "delivery").order_by(Job.id)).all()


def test_out_of_resources_waits_then_each_result_is_delivered_exactly_once(controlled: SimpleNamespace) -> None:
    env = controlled
    env.scp.answer(0xA700)
    for _ in range(3):  # three rounds of a full PACS disk: each a wait, never an attempt used up
        run_due_deliveries(env)
        make_all_due(env)
    assert len(env.scp.requests()) == 9 and not env.scp.stored()
    jobs = delivery_jobs(env)
    assert {(j.state, j.attempts, j.waits) for j in jobs} == {(JobState.PENDING, 0, 3)}
    assert all("0xA700" in j.last_error and "DeliveryDeferred" in j.last_error for j in jobs)
    assert delivery_states(env) == {"pacs": {"pending"}}

    env.scp.answer(None)  # space freed
    run_due_deliveries(env)
    with env.sessions() as s:
        results = sorted(s.scalars(select(Result.sop_instance_uid)))
    assert sorted(env.scp.stored()) == results, "each result acknowledged exactly once"
    assert {j.state for j in delivery_jobs(env)} == {JobState.DONE}
    run_due_deliveries(env)
    assert len(env.scp.stored()) == 3, "nothing is sent again once delivered"


def test_a_permanent_refusal_is_dead_at_once_with_its_reason(controlled: SimpleNamespace,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    env = controlled
    env.scp.answer(0xC000)
    with caplog.at_level("WARNING", logger="radpair.pipeline.workers"):
        run_due_deliveries(env)
    jobs = delivery_jobs(env)
    assert {(j.state, j.attempts) for j in jobs} == {(JobState.DEAD, 1)}, "no retries of a permanent refusal"
    assert all(j.last_error.startswith("DeliveryRefused:") and "0xC000" in j.last_error for j in jobs)
    assert delivery_states(env) == {"pacs": {"failed"}}
    dead_lines = [r for r in caplog.records if r.levelname == "WARNING" and " dead: " in r.getMessage()]
    assert len(dead_lines) == 3 and all("0xC000" in r.getMessage() for r in dead_lines)
    assert len(env.scp.requests()) == 3


def test_past_the_retry_horizon_a_job_is_dead_and_jobs_retry_sends_it_once(controlled: SimpleNamespace,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from radpair.cli import main

    env = controlled
    env.scp.stop()  # the PACS is away: refused connections, retried with backoff 2, 4, 8, 16 s (> 30 s)
    for _ in range(5):
        run_due_deliveries(env)
        make_all_due(env)
    jobs = delivery_jobs(env)
    assert {(j.state, j.waits) for j in jobs} == {(JobState.DEAD, 4)}
    assert all(j.last_error.startswith("gave up after 4 waits") and "PeerUnavailable" in j.last_error for j in jobs)

    assert main(["jobs", "list", "--state", "dead", "--data-dir", str(env.settings.data_dir)]) == 0
    listed = capsys.readouterr().out
    assert sum(" dead " in line and "gave up after 4 waits" in line for line in listed.splitlines()) == 3, listed

    env.scp.start()
    run_due_deliveries(env)
    assert not env.scp.requests(), "a dead job is not retried by itself"
    assert main(["jobs", "retry", "--dead", "--data-dir", str(env.settings.data_dir)]) == 0
    assert {(j.state, j.attempts, j.waits) for j in delivery_jobs(env)} == {(JobState.PENDING, 0, 0)}
    run_due_deliveries(env)
    with env.sessions() as s:
        results = sorted(s.scalars(select(Result.sop_instance_uid)))
    assert sorted(env.scp.stored()) == results
    assert main(["jobs", "retry", str(jobs[0].id), "--data-dir", str(env.settings.data_dir)]) == 1, \
        "a delivered job is not re-queued"
