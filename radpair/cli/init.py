"""``radpair init [DIR]``: a settings file and a data directory for a new site.

The settings file is the annotated example shipped in the package (every key, its default and
what it does), with ``data_dir`` set to the absolute path of ``DIR/data``: relative paths in
settings are read from the working directory, and a service started elsewhere must find its data.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib import resources
from pathlib import Path

SETTINGS_NAME = "radpair.toml"
_DATA_DIR_LINE = re.compile(r'^data_dir = ".*"$', re.M)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write radpair.toml (every setting, annotated) and a data directory",
                       description="Write DIR/radpair.toml from the annotated example settings, with data_dir "
                                   "set to DIR/data, and create that directory. The served model repository "
                                   "(DIR/data/models) is filled from the model shipped with radpair on the first "
                                   "`radpair serve`.")
    p.add_argument("dir", nargs="?", default=".", type=Path, metavar="DIR",
                   help="where radpair.toml and data/ go (default: the current directory)")
    p.add_argument("--force", action="store_true", help="overwrite an existing radpair.toml")
    p.set_defaults(func=init)


def example_settings() -> str:
    """The annotated example settings file shipped with radpair (package data)."""
    return resources.files("radpair").joinpath("radpair.example.toml").read_text(encoding="utf-8")


def init(args: argparse.Namespace) -> int:
    root = args.dir.resolve()
    target = root / SETTINGS_NAME
    if target.exists() and not args.force:
        print(f"radpair init: {target} exists; keeping it (--force overwrites it)", file=sys.stderr)
        return 1
    data_dir = root / "data"
    text, replaced = _DATA_DIR_LINE.subn(f"data_dir = {_toml_string(str(data_dir))}", example_settings(), count=1)
    if replaced != 1:
        raise RuntimeError("the shipped radpair.example.toml has no top-level data_dir line")
    data_dir.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    print(f"wrote {target}\ndata directory {data_dir}\n"
          f"next: radpair serve --config {target}")
    return 0


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
