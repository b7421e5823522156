"""``radpair retrain [--now]``: run the retraining job by hand, or show its schedule."""

from __future__ import annotations

import argparse
import logging
import sys

from radpair.cli.options import add_settings_options, settings_from_args

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="retrain on the archive's pairs, gate, promote to Triton")
    add_settings_options(p)
    p.add_argument("--now", action="store_true", help="run the retraining job now (else: show the schedule)")
    p.add_argument("--train-config", metavar="FILE", help="training configuration (overrides retrain.train_config)")
    p.set_defaults(func=retrain_command)


def retrain_command(args: argparse.Namespace) -> int:
    from radpair.core.db import make_engine, upgrade
    from radpair.retrain.lock import RetrainBusy
    from radpair.retrain.status import summary

    settings = settings_from_args(args)
    engine = make_engine(settings.database_url, echo=settings.database.echo)
    upgrade(engine)
    try:
        if not args.now:
            print(summary(engine), end="")
            return 0
        from radpair.retrain.job import run_retrain

        try:
            outcome = run_retrain(settings, engine, "manual", args.train_config)
        except RetrainBusy as exc:
            print(f"radpair retrain: not started: {exc}", file=sys.stderr)
            return 3
        except Exception as exc:  # recorded as a failed run by the lock; the traceback is in the log
            log.exception("retrain run failed")
            print(f"radpair retrain: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"retrain run #{outcome.run_id}: {outcome.outcome} in {outcome.seconds:.0f} s — {outcome.reason}")
        return 0
    finally:
        engine.dispose()
