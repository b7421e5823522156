"""Options the commands share, and how they become Settings and the task."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from radpair.core.settings import Settings
    from radpair.core.task import TaskDefinition


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="settings TOML file (see radpair.example.toml)")
    parser.add_argument("--data-dir", metavar="DIR", help="data directory (SQLite file, instances, quarantine)")


def add_task_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", metavar="FILE", help="task file (overrides the `task` setting; default: the shipped BRAF task)")


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings file, then RADPAIR_* variables, then the command-line flags, later ones winning."""
    from radpair.core.settings import load_settings

    return load_settings(getattr(args, "config", None),
                         overrides={"data_dir": getattr(args, "data_dir", None),
                                    "task": getattr(args, "task", None), **overrides})


def task_from_args(args: argparse.Namespace) -> TaskDefinition:
    """The task of ``--task``, else of the settings (``task``), else the shipped default."""
    from radpair.core.task import load_task

    return load_task(settings_from_args(args).task)
