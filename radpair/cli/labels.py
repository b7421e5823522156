"""``radpair labels import FILE.csv``: class labels for retraining (see :mod:`radpair.retrain.labels`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from radpair.cli.options import (
    add_settings_options,
    add_task_option,
    settings_from_args,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("labels", help="class labels for retraining")
    commands = p.add_subparsers(dest="labels_command", required=True, metavar="ACTION")
    imp = commands.add_parser("import", help="import labels from a CSV (a cohort's labels.csv or a site's list)")
    add_settings_options(imp)
    add_task_option(imp)
    imp.add_argument("file", type=Path, metavar="FILE.csv",
                     help="CSV with a label column and study_uid, accession_number or patient_id")
    imp.set_defaults(func=import_command)


def import_command(args: argparse.Namespace) -> int:
    from radpair.core.db import make_engine, session_factory, upgrade
    from radpair.core.task import load_task
    from radpair.retrain.labels import LabelFileError, import_labels

    settings = settings_from_args(args)
    task = load_task(settings.task)
    engine = make_engine(settings.database_url)
    upgrade(engine)
    try:
        summary = import_labels(session_factory(engine), args.file, task.label_names)
    except (LabelFileError, OSError) as exc:
        print(f"radpair: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"labels from {args.file}: {summary.added} added, {summary.updated} updated, "
          f"{summary.unchanged} unchanged, {summary.skipped_empty} without a label skipped")
    return 0
