"""What ``radpair status`` shows of the pipeline: jobs by state, the jobs that did not succeed and
why, the latest result per study, and deliveries by destination and outcome."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radpair.core.models import Delivery, Job, JobState, Result, Study
from radpair.core.status import StatusTable, short

RECENT = 10


def _reason(job: Job) -> str:
    """The last line of the job's last error (a traceback's last line is its message)."""
    lines = job.last_error.strip().splitlines()
    return short(lines[-1] if lines else "", 100)


def status_tables(session: Session, recent: int = RECENT) -> list[StatusTable]:
    jobs = session.execute(
        select(Job.kind, Job.state, func.count(), func.coalesce(func.sum(Job.waits), 0))
        .group_by(Job.kind, Job.state).order_by(Job.kind, Job.state)
    ).all()
    job_rows = [(kind, state.value, n, waits) for kind, state, n, waits in jobs]

    unsuccessful = [
        (job.id, job.kind, study_uid or "-", job.state.value, job.attempts, _reason(job))
        for job, study_uid in session.execute(
            select(Job, Study.study_uid).outerjoin(Study, Study.id == Job.study_pk)
            .where(Job.state.in_((JobState.DEAD, JobState.SKIPPED))).order_by(Job.id.desc()).limit(recent))
    ]

    # The newest SR of each study that no later generation has superseded: what the PACS holds now.
    latest = (select(Result, Study.study_uid).join(Study, Study.id == Result.study_pk)
              .where(Result.kind == "sr", Result.superseded_by.is_(None))
              .order_by(Result.id.desc()).limit(recent))
    results = [
        (study_uid, result.generation,
         f"{result.predicted_class} p={result.probability:.3f} ({result.model_name} v{result.model_version})",
         f"{result.created_at:%Y-%m-%d %H:%M:%S}", result.path)
        for result, study_uid in session.execute(latest)
    ]

    deliveries = session.execute(
        select(Delivery.destination, Delivery.state, func.count(), func.max(Delivery.last_error))
        .group_by(Delivery.destination, Delivery.state).order_by(Delivery.destination, Delivery.state)
    ).all()
    delivery_rows = [(dest, state, n, short(err or "", 60)) for dest, state, n, err in deliveries]

    return [
        StatusTable("pipeline jobs", ("kind", "state", "jobs", "waits"), job_rows),
        StatusTable("dead and skipped jobs (the reason is the job's last error)",
                    ("job", "kind", "study", "state", "attempts", "reason"), unsuccessful),
        StatusTable("latest result per study (files under <data_dir>/instances)",
                    ("study", "gen", "result", "written (UTC)", "SR file"), results),
        StatusTable("deliveries", ("destination", "outcome", "results", "last error"), delivery_rows),
    ]
