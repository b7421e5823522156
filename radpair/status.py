"""``radpair status``: what the archive holds, at a glance (plain text tables)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import current_revision, make_engine, session_factory
from core.models import Association, Instance, QuarantineEntry, Report, Study
from radpair.options import add_settings_options, settings_from_args
from radpair.retrain import summary as retrain_summary

RECENT_ASSOCIATIONS = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="studies, reports, associations and quarantine at a glance")
    add_settings_options(p)
    p.set_defaults(func=status)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the header."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(session: Session) -> str:
    by_state = dict(session.execute(select(Study.state, func.count()).group_by(Study.state)).tuples().all())
    instances, volume = session.execute(select(func.count(Instance.id), func.coalesce(func.sum(Instance.size), 0))).one()
    paired = session.scalar(select(func.count(Report.id)).where(Report.study_pk.is_not(None))) or 0
    unpaired = session.scalar(select(func.count(Report.id)).where(Report.study_pk.is_(None))) or 0
    quarantined = session.scalar(select(func.count(QuarantineEntry.id))) or 0
    summary = table(("archive", "count"), [
        *[(f"studies {state.value}", n) for state, n in sorted(by_state.items(), key=lambda kv: kv[0].value)],
        ("instances", f"{instances} ({volume / 1e6:.1f} MB)"),
        ("reports paired", paired),
        ("reports unpaired", unpaired),
        ("quarantined", quarantined),
    ])
    recent = session.scalars(select(Association).order_by(Association.id.desc()).limit(RECENT_ASSOCIATIONS)).all()
    associations = table(("started (UTC)", "peer", "stored", "dup", "failed", "outcome"), [
        (f"{a.started_at:%Y-%m-%d %H:%M:%S}", f"{a.calling_ae}@{a.peer_address}", a.stored, a.duplicates,
         a.failures, a.outcome) for a in recent])
    return f"{summary}\n\nrecent associations\n{associations}\n"


def status(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    engine = make_engine(settings.database_url)
    if current_revision(engine) is None:
        print(f"radpair: no archive at {engine.url.render_as_string(hide_password=True)} yet "
              "(`radpair serve` or `radpair db upgrade` creates it)")
        return 1
    with session_factory(engine)() as session:
        print(render(session), end="")
    # Retraining (radpair.retrain): the next scheduled run and the last run's outcome.
    print("\n" + retrain_summary(engine), end="")
    engine.dispose()
    return 0
