"""radpair: a DICOM node that runs imaging AI on the studies a PACS sends it and sends the results back.

One console script. Each command is a module of this package with ``register(subparsers)``; its
handler imports what it needs when it runs, so ``radpair --help`` and ``radpair status`` import no
heavy library (torch, MONAI, transformers, highdicom).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from radpair.cli.options import add_settings_options, command_parsers
from radpair.core.config import ConfigError

# Each module adds its subcommands with ``set_defaults(func=...)``, in the order `--help` lists them.
COMMAND_MODULES = (
    "radpair.cli.init",
    "radpair.cli.serve",
    "radpair.cli.status",
    "radpair.cli.jobs",
    "radpair.cli.send",
    "radpair.cli.cohort",
    "radpair.cli.demo",
    "radpair.cli.train",
    "radpair.cli.export",
    "radpair.cli.model",
    "radpair.cli.retrain",
    "radpair.cli.labels",
    "radpair.cli.db",
)

EPILOG = """\
first hour:
  radpair init /srv/radpair                      # writes radpair.toml and the data directory
  radpair serve --config /srv/radpair/radpair.toml
  radpair status --config /srv/radpair/radpair.toml

`radpair COMMAND --help` lists a command's options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="radpair", description=(__doc__ or "").split("\n\n")[0],
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    modules: list[ModuleType] = [importlib.import_module(name) for name in COMMAND_MODULES]
    for module in modules:
        module.register(sub)
    for command in command_parsers(parser):
        add_settings_options(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from radpair.cli.logs import configure_logging
    from radpair.cli.options import settings_from_args
    from radpair.core.uids import set_uid_root

    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        configure_logging(args.verbose, settings.logging, settings.log_level)
        set_uid_root(settings.dicom.uid_root)
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"radpair: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
