"""Options every command that touches the archive shares, and how they become Settings."""

from __future__ import annotations

import argparse
from typing import Any

from core.settings import Settings, load_settings


def add_settings_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="settings TOML file (see radpair.example.toml)")
    parser.add_argument("--data-dir", metavar="DIR", help="data directory (SQLite file, instances, quarantine)")


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> Settings:
    """Settings file, then RADPAIR_* variables, then the command-line flags, later ones winning."""
    return load_settings(args.config, overrides={"data_dir": args.data_dir, **overrides})
