"""``radpair jobs``: list the job queue, and put dead jobs back in it once their cause is fixed."""

from __future__ import annotations

import argparse

from radpair.cli.options import add_settings_options, settings_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("jobs", help="list pipeline jobs; re-queue dead ones (`radpair jobs retry ID|--dead`)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="jobs by id, with their state and reason")
    add_settings_options(listing)
    listing.add_argument("--state", choices=("pending", "running", "done", "skipped", "dead"),
                         help="only jobs in this state")
    listing.add_argument("--limit", type=int, default=50, metavar="N", help="at most N jobs, newest first (default 50)")
    listing.set_defaults(func=list_jobs)
    retry = actions.add_parser("retry", help="re-queue dead jobs (attempts and waits reset), due now")
    add_settings_options(retry)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID", help="job ids (see `radpair jobs list`)")
    which.add_argument("--dead", action="store_true", help="every dead job")
    retry.set_defaults(func=retry_jobs)


def _sessions(args: argparse.Namespace):  # noqa: ANN202 - (engine, sessionmaker) of the configured archive
    from radpair.core.db import current_revision, make_engine, session_factory

    engine = make_engine(settings_from_args(args).database_url)
    if current_revision(engine) is None:
        engine.dispose()
        raise SystemExit(f"radpair: no archive at {engine.url.render_as_string(hide_password=True)}")
    return engine, session_factory(engine)


def list_jobs(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from radpair.cli.status import table
    from radpair.core.models import Job, JobState
    from radpair.pipeline.jobs import short_reason

    engine, sessions = _sessions(args)
    try:
        with sessions() as session:
            query = select(Job).order_by(Job.id.desc()).limit(args.limit)
            if args.state:
                query = query.where(Job.state == JobState(args.state))
            rows = [(j.id, j.kind, j.state.value, j.attempts, j.waits, j.key, short_reason(j.last_error)[:100])
                    for j in session.scalars(query)]
    finally:
        engine.dispose()
    print(table(("id", "kind", "state", "attempts", "waits", "key", "reason"), rows))
    return 0


def retry_jobs(args: argparse.Namespace) -> int:
    from radpair.pipeline.jobs import requeue

    if not args.dead and not args.ids:
        raise SystemExit("radpair jobs retry: give job ids or --dead")
    engine, sessions = _sessions(args)
    try:
        done = requeue(sessions, args.ids, dead=args.dead)
    finally:
        engine.dispose()
    missed = sorted(set(args.ids) - set(done))
    print(f"re-queued {len(done)} job(s)" + (f": {', '.join(map(str, done))}" if done else ""))
    if missed:
        print(f"not re-queued (unknown, or not dead or pending): {', '.join(map(str, missed))}")
    return 1 if missed else 0
