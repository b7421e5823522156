"""radpair: a DICOM-native PACS node for imaging AI — archive, Triton inference, SR/SEG results, retraining.

One console script. Each command is a module of this package with ``register(subparsers)``; its
handler imports what it needs when it runs, so ``radpair --help`` imports no heavy library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from types import ModuleType

from radpair.core.config import ConfigError

# Each module adds its subcommands with ``set_defaults(func=...)``, in the order `--help` lists them.
COMMAND_MODULES = (
    "radpair.cli.db",
    "radpair.cli.serve",
    "radpair.cli.status",
    "radpair.cli.jobs",
    "radpair.cli.cohort",
    "radpair.cli.send",
    "radpair.cli.train",
    "radpair.cli.export",
    "radpair.cli.model",
    "radpair.cli.retrain",
    "radpair.cli.labels",
    "radpair.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radpair", description=(__doc__ or "").split("\n\n")[0])
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
    except ConfigError as exc:
        print(f"radpair: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
