"""Options the commands share, and how they become Settings and the task.

The global options (``-v``, ``--config``, ``--data-dir``, ``--log-format``) are accepted before the
command and after it: ``radpair -v serve`` and ``radpair serve -v`` are the same. Every command's
parser carries them with ``argparse.SUPPRESS`` defaults, so a value given before the command is
not overwritten by the command parser's default; the top-level parser holds the real defaults.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from radpair.core.settings import Settings
    from radpair.core.task import TaskDefinition

# (flags, keyword arguments) of each global option, without its default.
GLOBAL_OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("-v", "--verbose"), {"action": "store_true", "help": "debug logging, and library warnings"}),
    (("--config",), {"metavar": "FILE", "help": "settings TOML file (`radpair init` writes one; see radpair.example.toml)"}),
    (("--data-dir",), {"metavar": "DIR", "help": "data directory: SQLite file, instances, models (overrides data_dir)"}),
    (("--log-format",), {"choices": ("text", "json"), "help": "log lines as text or one JSON object each (overrides logging.format)"}),
)
GLOBAL_DEFAULTS = {"verbose": False, "config": None, "data_dir": None, "log_format": None}


def add_settings_options(parser: argparse.ArgumentParser, top_level: bool = False) -> None:
    """Give ``parser`` the global options it does not have yet (idempotent). Only the top-level
    parser has defaults; a command's parser sets an option only when it is given there."""
    group = parser.add_argument_group("global options (before or after the command)") if top_level else parser
    for flags, kwargs in GLOBAL_OPTIONS:
        if any(flag in parser._option_string_actions for flag in flags):
            continue
        dest = flags[-1].lstrip("-").replace("-", "_")
        group.add_argument(*flags, **kwargs, default=GLOBAL_DEFAULTS[dest] if top_level else argparse.SUPPRESS)


def command_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """Every parser below ``parser`` in the command tree (commands and their subcommands)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield child
                yield from command_parsers(child)


def add_task_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", metavar="FILE", help="task file (overrides the `task` setting; default: the shipped BRAF task)")


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings file, then RADPAIR_* variables, then the command-line flags, later ones winning."""
    from radpair.core.settings import load_settings

    return load_settings(getattr(args, "config", None),
                         overrides={"data_dir": getattr(args, "data_dir", None),
                                    "task": getattr(args, "task", None),
                                    "logging.format": getattr(args, "log_format", None), **overrides})


def task_from_args(args: argparse.Namespace) -> TaskDefinition:
    """The task of ``--task``, else of the settings (``task``), else the shipped default."""
    from radpair.core.task import load_task

    return load_task(settings_from_args(args).task)
