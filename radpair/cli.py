"""``radpair``: one console script; each subsystem registers its own subcommands."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from core.settings import SettingsError

# Each module has ``register(subparsers)`` adding its subcommands with ``set_defaults(func=...)``.
COMMAND_MODULES = (
    "radpair.db_commands",
    "radpair.serve",
    "radpair.status",
    "training.cohort.commands",
    "radpair.send_command",
    "training.export_commands",
    "pipeline.model_commands",
    "radpair.retrain",
    "radpair.labels",
    "radpair.demo",
    "training.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radpair", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: list[ModuleType] = [importlib.import_module(name) for name in COMMAND_MODULES]
    for module in modules:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        print(f"radpair: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
