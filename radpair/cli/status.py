"""``radpair status``: what the archive holds, what the pipeline did, when retraining runs next."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING

from radpair.cli.options import add_settings_options, settings_from_args

if TYPE_CHECKING:
    from radpair.core.status import StatusTable


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="studies, associations, jobs, results, deliveries and retraining at a glance")
    add_settings_options(p)
    p.set_defaults(func=status)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces, with a dashed rule under the header."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(tables: Sequence[StatusTable]) -> str:
    """Each table under its title (the first one's title is its header row)."""
    parts = []
    for i, t in enumerate(tables):
        parts.append(table(t.headers, t.rows) if i == 0 else f"{t.title}\n{table(t.headers, t.rows)}")
    return "\n\n".join(parts) + "\n"


def status(args: argparse.Namespace) -> int:
    from radpair.core.db import archive_missing, current_revision, make_engine, session_factory
    from radpair.listener.status import status_tables as listener_tables
    from radpair.pipeline.status import status_tables as pipeline_tables
    from radpair.retrain.status import summary as retrain_summary

    settings = settings_from_args(args)
    if archive_missing(settings.database_url):
        return _no_archive(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        if current_revision(engine) is None:
            return _no_archive(engine.url.render_as_string(hide_password=True))
        with session_factory(engine)() as session:
            print(render([*listener_tables(session), *pipeline_tables(session)]), end="")
        print("\n" + retrain_summary(engine), end="")
    finally:
        engine.dispose()
    return 0


def _no_archive(where: str) -> int:
    print(f"radpair: no archive at {where} yet (`radpair serve` or `radpair db upgrade` creates it)")
    return 1
