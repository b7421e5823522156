"""``radpair db upgrade|current``: manage the archive's schema by hand (serve also upgrades)."""

from __future__ import annotations

import argparse

from radpair.cli.options import add_settings_options, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="archive schema migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="apply all pending migrations")
    add_settings_options(up)
    up.set_defaults(func=_upgrade)
    cur = db_sub.add_parser("current", help="print the schema revision")
    add_settings_options(cur)
    cur.set_defaults(func=_current)


def _upgrade(args: argparse.Namespace) -> int:
    from radpair.core.db import current_revision, make_engine, upgrade

    settings = settings_from_args(args)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    print(f"schema at revision {current_revision(engine)} ({engine.url.render_as_string(hide_password=True)})")
    return 0


def _current(args: argparse.Namespace) -> int:
    from radpair.core.db import current_revision, make_engine

    engine = make_engine(settings_from_args(args).database_url)
    print(current_revision(engine) or "(empty database)")
    return 0
