"""One listener worker process: receive → verify → write → fsync → index, on its own interpreter.

Started by :class:`radpair.listener.pool.ListenerPool` (multiprocessing "spawn": nothing of the
parent's threads or open database connections is inherited). It is the in-process
:class:`ListenerService` with its connections coming over the hand-off channel and the open
association count shared with the other workers, so ``max_associations`` holds over all of them.
Its log records go to the parent's handlers through a pipe. It stops on SIGTERM (stores in
flight finish, new ones get 0xA700) and when its parent dies, however it dies (its process id
changes, and the channel closes).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import socket
import ssl
import sys
import threading
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized

from sqlalchemy import Engine

from radpair.core.db import make_engine
from radpair.core.settings import Settings
from radpair.core.signals import StopSignals
from radpair.listener import handoff
from radpair.listener.connections import GuardedAssociationServer
from radpair.listener.handoff import HandedAssociationServer
from radpair.listener.server import ListenerService

log = logging.getLogger(__name__)

# A worker whose parent is gone stops as usual (stores in flight finish) but exits after this many
# seconds whatever it is waiting for: what it has not acknowledged, its peer sends again.
ORPHAN_EXIT_AFTER = 45.0


class WorkerListener(ListenerService):
    """The listener of one worker process."""

    def __init__(self, settings: Settings, engine: Engine, index: int, channel: socket.socket,
                 open_connections: Synchronized, stop: threading.Event) -> None:
        super().__init__(settings, engine)
        self.index = index
        self.channel = channel
        self.stop_requested = stop
        self.access.count_open = lambda _ae: open_connections.value

    def make_server(self, handlers: list, ssl_context: ssl.SSLContext | None) -> GuardedAssociationServer:
        lst = self.settings.listener
        return self.ae.make_server((lst.host, lst.port), evt_handlers=handlers, ssl_context=ssl_context,
                                   server_class=HandedAssociationServer, channel=self.channel,
                                   parent_gone=self.stop_requested.set,
                                   per_address=lst.max_associations_per_address,
                                   handshake_timeout=lst.request_timeout)

    def announce(self, tls: bool) -> None:
        log.debug("listener worker %d (pid %d) ready", self.index, os.getpid())


def run(index: int, settings: Settings, channel: socket.socket, open_connections: Synchronized,
        logs: Connection, levels: dict[str, int], parent_pid: int) -> None:
    """The worker's main function (the target of its ``multiprocessing`` process)."""
    stop = threading.Event()  # set by the server when the channel closes
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the parent, which stops us
    signals = StopSignals([signal.SIGTERM])
    _log_to_parent(logs, levels)
    engine = make_engine(settings.database_url, echo=settings.database.echo)
    try:
        service = WorkerListener(settings, engine, index, channel, open_connections, stop)
        service.start()
    except Exception as exc:  # reported to the parent, which names it and stops the start
        handoff.send(channel, "failed", f"{type(exc).__name__}: {exc}")
        sys.exit(1)
    handoff.send(channel, "ready")
    if signals.wait(until=lambda: stop.is_set() or os.getppid() != parent_pid) != "SIGTERM":
        log.warning("listener worker %d (pid %d): the listener's parent process is gone; stopping", index, os.getpid())
        orphan_deadline = threading.Timer(ORPHAN_EXIT_AFTER, os._exit, (1,))  # nobody is left to kill a hung stop
        orphan_deadline.daemon = True
        orphan_deadline.start()
    service.stop()
    engine.dispose()


class _PipeQueue:
    """What QueueHandler needs of a queue, over the worker's log pipe (sends are serialised).
    Once the parent is gone (its end of the pipe with it) the last lines go to stderr."""

    def __init__(self, logs: Connection) -> None:
        self.logs: Connection | None = logs
        self.lock = threading.Lock()

    def put_nowait(self, record: logging.LogRecord) -> None:
        with self.lock:
            if self.logs is not None:
                try:
                    self.logs.send(record)
                    return
                except OSError:
                    self.logs = None
            print(f"{record.levelname} {record.name}: {record.getMessage()}", file=sys.stderr, flush=True)


def _log_to_parent(logs: Connection, levels: dict[str, int]) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(logging.handlers.QueueHandler(_PipeQueue(logs)))
    for name, level in levels.items():
        logging.getLogger(name or None).setLevel(level)
    logging.captureWarnings(True)
