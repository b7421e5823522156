"""What ``radpair status`` shows of the pipeline: jobs, per-study outcomes, deliveries."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radpair.core.models import Delivery, Job, Result, Study
from radpair.core.status import StatusTable, short

RECENT = 10


def status_tables(session: Session, recent: int = RECENT) -> list[StatusTable]:
    jobs = session.execute(
        select(Job.kind, Job.state, func.count(), func.coalesce(func.sum(Job.waits), 0))
        .group_by(Job.kind, Job.state).order_by(Job.kind, Job.state)
    ).all()
    job_rows = [(kind, state.value, n, waits) for kind, state, n, waits in jobs]

    studies = []
    for job, study_uid in session.execute(
        select(Job, Study.study_uid).join(Study, Study.id == Job.study_pk)
        .where(Job.kind == "inference").order_by(Job.id.desc()).limit(recent)
    ):
        result = session.scalars(select(Result).where(Result.job_pk == job.id, Result.kind == "sr")).first()
        if result is not None:
            outcome = f"{result.predicted_class} p={result.probability:.3f} ({result.model_name} v{result.model_version})"
        else:
            outcome = short(job.last_error.strip().splitlines()[-1] if job.last_error.strip() else "", 120)
        studies.append((study_uid, job.generation, job.state.value, job.attempts, outcome))

    deliveries = session.execute(
        select(Delivery.destination, Delivery.state, func.count(), func.max(Delivery.last_error))
        .group_by(Delivery.destination, Delivery.state).order_by(Delivery.destination, Delivery.state)
    ).all()
    delivery_rows = [(dest, state, n, short(err or "", 60)) for dest, state, n, err in deliveries]

    return [
        StatusTable("pipeline jobs", ("kind", "state", "jobs", "waits"), job_rows),
        StatusTable("recent analyses (why a study was skipped, or what it got)",
                    ("study", "gen", "state", "attempts", "outcome"), studies),
        StatusTable("deliveries", ("destination", "state", "results", "last error"), delivery_rows),
    ]
