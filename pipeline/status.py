"""What ``radpair status`` shows about the pipeline: jobs, per-study outcomes, deliveries.

Returned as titled tables of plain values so the CLI renders them like its other tables
(``radpair status`` imports this; the pipeline does not import the CLI).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import Delivery, Job, Result, Study

Table = tuple[str, tuple[str, ...], list[tuple[object, ...]]]

RECENT = 10


def _short(text: str, width: int = 90) -> str:
    line = " ".join((text or "").split())
    return line if len(line) <= width else line[: width - 1] + "…"


def pipeline_tables(session: Session, recent: int = RECENT) -> list[Table]:
    jobs = session.execute(
        select(Job.kind, Job.state, func.count(), func.coalesce(func.sum(Job.waits), 0))
        .group_by(Job.kind, Job.state).order_by(Job.kind, Job.state)
    ).all()
    job_rows = [(kind, state.value, n, waits) for kind, state, n, waits in jobs]

    studies = []
    for job, study_uid in session.execute(
        select(Job, Study.study_uid).join(Study, Study.id == Job.study_pk)
        .where(Job.kind == "inference").order_by(Job.id.desc()).limit(recent)
    ).tuples():
        result = session.scalars(select(Result).where(Result.job_pk == job.id, Result.kind == "sr")).first()
        if result is not None:
            outcome = f"{result.predicted_class} p={result.probability:.3f} ({result.model_name} v{result.model_version})"
        else:
            outcome = _short(job.last_error.strip().splitlines()[-1] if job.last_error.strip() else "")
        studies.append((study_uid, job.generation, job.state.value, job.attempts, outcome))

    deliveries = session.execute(
        select(Delivery.destination, Delivery.state, func.count(), func.max(Delivery.last_error))
        .group_by(Delivery.destination, Delivery.state).order_by(Delivery.destination, Delivery.state)
    ).all()
    delivery_rows = [(dest, state, n, _short(err or "", 60)) for dest, state, n, err in deliveries]

    return [
        ("pipeline jobs", ("kind", "state", "jobs", "waits"), job_rows),
        ("recent analyses (why a study was skipped, or what it got)",
         ("study", "gen", "state", "attempts", "outcome"), studies),
        ("deliveries", ("destination", "state", "results", "last error"), delivery_rows),
    ]
