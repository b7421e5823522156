"""``radpair serve``: the long-running service, and the composition root that wires it together.

The service is a list of components sharing one settings object, one database engine and one
APScheduler BackgroundScheduler. Each component has ``start(scheduler)`` and ``stop()``. This is
the one place where the layers meet: the pipeline gets its model gateway (Triton's, unless
``triton.mode = "off"``) here, and nothing else imports this module.
"""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from typing import TYPE_CHECKING, Protocol

from radpair.cli.options import add_settings_options, settings_from_args

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler
    from sqlalchemy import Engine

    from radpair.core.settings import Settings

log = logging.getLogger(__name__)


class Component(Protocol):
    name: str

    def start(self, scheduler: BaseScheduler) -> None: ...

    def stop(self) -> None: ...


def build_components(settings: Settings, engine: Engine) -> list[Component]:
    """Started in this order, stopped in reverse: the listener takes studies while the embedded
    Triton loads its models, and the pipeline's workers stop before the server they call."""
    from radpair.listener.pool import ListenerPool
    from radpair.pipeline.service import PipelineService
    from radpair.retrain.schedule import RetrainService
    from radpair.serving.gateway import TritonGateway
    from radpair.serving.server import TritonService

    models = TritonGateway(settings) if settings.triton.mode != "off" else None
    return [ListenerPool(settings, engine), TritonService(settings), PipelineService(settings, engine, models),
            RetrainService(settings, engine)]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the listener, the pipeline, the embedded Triton and the retraining "
                                     "schedule until SIGTERM/SIGINT")
    add_settings_options(p)
    p.add_argument("--port", type=int, metavar="N", help="listener port (overrides listener.port; 0 = any free)")
    p.add_argument("--ae-title", metavar="AET", help="listener AE title (overrides listener.ae_title)")
    p.set_defaults(func=serve)


def port_in_use(host: str, port: int) -> bool:
    """Whether another program listens on ``host:port`` (a bind with SO_REUSEADDR, as the servers do,
    fails only then; a socket in TIME_WAIT does not count)."""
    if port == 0:
        return False
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def listener_port_message(settings: Settings) -> str:
    lst = settings.listener
    return (f"radpair serve: the listener's port {lst.host}:{lst.port} is in use by another program "
            f"(another radpair serve?); stop it, or choose a port with --port or listener.port")


def serve(args: argparse.Namespace) -> int:
    from apscheduler.schedulers.background import BackgroundScheduler

    from radpair.core.db import make_engine, upgrade
    from radpair.core.signals import StopSignals

    settings = settings_from_args(args, **{"listener.port": args.port, "listener.ae_title": args.ae_title})
    if port_in_use(settings.listener.host, settings.listener.port):
        print(listener_port_message(settings), file=sys.stderr)
        return 1
    engine = make_engine(settings.database_url, echo=settings.database.echo)
    upgrade(engine)
    signals = StopSignals()
    scheduler = BackgroundScheduler(timezone="UTC")
    started: list[Component] = []
    try:
        for component in build_components(settings, engine):
            try:
                component.start(scheduler)
            except OSError as exc:  # the port taken between the check above and the bind
                if exc.errno != errno.EADDRINUSE or component.name != "listener":
                    raise
                print(listener_port_message(settings), file=sys.stderr)
                return 1
            started.append(component)
        scheduler.start()
        log.info("radpair serving (%s); data in %s, database %s", ", ".join(c.name for c in started),
                 settings.data_dir.resolve(), engine.url.render_as_string(hide_password=True))
        log.info("%s received: stopping", signals.wait())
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=True)
        for component in reversed(started):
            component.stop()
        engine.dispose()
        log.info("radpair stopped")
    return 0
