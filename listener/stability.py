"""Study stability: a study is complete ("stable") once nothing arrived for ``stable_age`` s.

:func:`mark_stable_studies` is called periodically (an APScheduler job in ``radpair serve``).
It reads only studies in state "receiving" through the (state, last_received_at) index, so it
costs O(receiving studies), not O(archive). Each transition is a conditional UPDATE, so an
instance that arrives concurrently (and bumps last_received_at) wins. A stable study that gets a
new instance goes back to "receiving" (see listener.archive); when it re-stabilises its
``stable_generation`` is bumped, which later stages use to tell a re-send apart.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import Study, StudyState, utcnow

log = logging.getLogger(__name__)


def mark_stable_studies(sessions: sessionmaker[Session], stable_age: float,
                        now: dt.datetime | None = None) -> list[str]:
    """Move every study silent for ``stable_age`` seconds to "stable"; return their UIDs."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=stable_age)
    changed: list[str] = []
    with sessions() as session:
        due = session.execute(
            select(Study.id, Study.study_uid, Study.stable_generation)
            .where(Study.state == StudyState.RECEIVING, Study.last_received_at <= cutoff)
        ).all()
        session.rollback()  # end the read; each transition below is its own short transaction
        for pk, uid, generation in due:
            done = session.execute(
                update(Study)
                .where(Study.id == pk, Study.state == StudyState.RECEIVING, Study.last_received_at <= cutoff)
                .values(state=StudyState.STABLE, stable_at=now, stable_generation=Study.stable_generation + 1)
            ).rowcount
            session.commit()
            if done:
                changed.append(uid)
                log.info("study %s: stable (generation %d)", uid, generation + 1)
    return changed
