"""``radpair model list|load|unload|rollback``: the model versions in the repository and on Triton."""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Callable

from radpair.cli.options import add_settings_options, settings_from_args

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from radpair.serving.client import TritonClient
    from radpair.serving.repository import ModelRepository


def register(sub: argparse._SubParsersAction) -> None:
    model = sub.add_parser("model", help="model versions: list, load (promote), unload, rollback")
    model_sub = model.add_subparsers(dest="model_command", required=True)
    for name, func, helptext in (
        ("list", _list, "versions in the repository, their metrics, and which one Triton serves"),
        ("load", _load, "serve a version (default: the one config.pbtxt names); the old serves until it is ready"),
        ("unload", _unload, "stop serving the model"),
        ("rollback", _rollback, "serve the version the current one replaced"),
    ):
        p = model_sub.add_parser(name, help=helptext)
        add_settings_options(p)
        p.add_argument("--name", help="model name (default: the task's model)")
        p.add_argument("--url", help="Triton URL host:port (default: triton.url, else the embedded server's port)")
        p.add_argument("--repo", metavar="DIR", help="model repository (default: the served one, "
                                                     "triton.model_repository or <data_dir>/models)")
        if name == "load":
            p.add_argument("--version", type=int, help="version number to serve")
        if name == "rollback":
            p.add_argument("--reason", default="", help="why (recorded in the model lineage)")
        p.set_defaults(func=func)


def _context(args: argparse.Namespace) -> tuple[TritonClient, ModelRepository]:
    from radpair.serving.client import client_from_settings

    settings = settings_from_args(args, **{"triton.url": args.url, "triton.model_repository": args.repo})
    client = client_from_settings(settings, args.name)
    return client, client.repository


def _reported(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Expected failures (Triton down, a version that does not load) as one line, not a traceback."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from radpair.serving.client import TritonInferenceError, TritonUnavailable
        from radpair.serving.deploy import DeployError
        from radpair.serving.repository import RepositoryError

        try:
            return func(args)
        except (DeployError, RepositoryError, TritonUnavailable, TritonInferenceError) as exc:
            print(f"radpair model {args.model_command}: {exc}", file=sys.stderr)
            return 1
    return run


def _headline_metrics(card: dict[str, Any]) -> str:
    """A few numbers from the card's metrics: the fold means of ``internal`` / ``external`` AUC and F1
    as training writes them, else the top-level numbers."""
    metrics = card.get("metrics") or {}
    numbers = {f"{part}.{k}": v["mean"] for part in ("internal", "external") if isinstance(metrics.get(part), dict)
               for k, v in metrics[part].items() if k in ("auc", "f1") and isinstance(v, dict) and "mean" in v}
    if not numbers:
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return ", ".join(f"{k}={v:.3g}" for k, v in list(numbers.items())[:4]) or "-"


@_reported
def _list(args: argparse.Namespace) -> int:
    from radpair.retrain.lineage import lineage_lines
    from radpair.serving.client import TritonUnavailable

    client, repo = _context(args)
    name = client.model_name
    current = repo.current(name)
    try:
        serving = set(client.metadata().versions) if client.ready() else set()
        reachable = True
    except TritonUnavailable:
        serving, reachable = set(), False
    print(f"{name} in {repo.root} (current: {current}; Triton at {client.url}: "
          f"{'serving ' + ', '.join(sorted(serving, key=int)) if serving else 'not serving' if reachable else 'unreachable'})")
    for files in repo.versions(name):
        card = files.card()
        marks = ("*" if files.version == current else " ") + ("S" if str(files.version) in serving else " ")
        print(f" {marks} {files.version:>4}  {card.get('created', '?'):<25} {_headline_metrics(card):<50} "
              f"run {card.get('run', '?')}")
    print(" (* current in config.pbtxt, S served by Triton)")
    with _lineage(args) as sessions:
        if sessions is not None:
            print("lineage (model_versions)\n" + "\n".join(lineage_lines(sessions, name)))
    return 0


@_reported
def _load(args: argparse.Namespace) -> int:
    from radpair.retrain.lineage import record_swap
    from radpair.serving.deploy import deploy

    client, repo = _context(args)
    version = args.version if args.version is not None else repo.current(client.model_name)
    previous = deploy(client, repo, version)
    with _lineage(args) as sessions:
        if sessions is not None:
            record_swap(sessions, client.model_name, previous, version, "radpair model load")
    print(f"{client.model_name} version {version} serving (was {previous})")
    return 0


@_reported
def _unload(args: argparse.Namespace) -> int:
    client, _ = _context(args)
    client.unload()
    print(f"{client.model_name} unloaded")
    return 0


@_reported
def _rollback(args: argparse.Namespace) -> int:
    from radpair.retrain.lineage import record_swap
    from radpair.serving.deploy import rollback

    client, repo = _context(args)
    retired = repo.current(client.model_name)
    version = rollback(client, repo)
    with _lineage(args) as sessions:
        if sessions is not None:
            record_swap(sessions, client.model_name, retired, version, args.reason or "radpair model rollback",
                        rollback=True)
    print(f"{client.model_name} rolled back to version {version}")
    return 0


@contextlib.contextmanager
def _lineage(args: argparse.Namespace) -> Iterator[sessionmaker[Session] | None]:
    """Sessions on the archive holding ``model_versions`` (None when there is no archive yet)."""
    from radpair.core.db import current_revision, make_engine, session_factory

    settings = settings_from_args(args)
    if not settings.database.url and not (settings.data_dir / "radpair.db").is_file():
        yield None
        return
    engine = make_engine(settings.database_url)
    try:
        yield session_factory(engine) if current_revision(engine) is not None else None
    finally:
        engine.dispose()

