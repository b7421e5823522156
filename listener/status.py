"""What ``radpair status`` shows of the listener: the archive's counts and the recent associations."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radpair.core.models import Association, Instance, QuarantineEntry, Report, Study
from radpair.core.status import StatusTable

RECENT_ASSOCIATIONS = 10


def status_tables(session: Session, recent: int = RECENT_ASSOCIATIONS) -> list[StatusTable]:
    by_state = dict(session.execute(select(Study.state, func.count()).group_by(Study.state)).all())
    instances, volume = session.execute(select(func.count(Instance.id), func.coalesce(func.sum(Instance.size), 0))).one()
    paired = session.scalar(select(func.count(Report.id)).where(Report.study_pk.is_not(None))) or 0
    unpaired = session.scalar(select(func.count(Report.id)).where(Report.study_pk.is_(None))) or 0
    quarantined = session.scalar(select(func.count(QuarantineEntry.id))) or 0
    archive = StatusTable("archive", ("archive", "count"), [
        *[(f"studies {state.value}", n) for state, n in sorted(by_state.items(), key=lambda kv: kv[0].value)],
        ("instances", f"{instances} ({int(volume) / 1e6:.1f} MB)"),  # PostgreSQL sums a BIGINT as NUMERIC
        ("reports paired", paired),
        ("reports unpaired", unpaired),
        ("quarantined", quarantined),
    ])
    associations = StatusTable("recent associations", ("started (UTC)", "peer", "stored", "dup", "failed", "outcome"), [
        (f"{a.started_at:%Y-%m-%d %H:%M:%S}", f"{a.calling_ae}@{a.peer_address}", a.stored, a.duplicates,
         a.failures, a.outcome)
        for a in session.scalars(select(Association).order_by(Association.id.desc()).limit(recent))])
    return [archive, associations]
