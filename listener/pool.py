"""The multi-process listener of ``radpair serve``: a parent that accepts, workers that ingest.

One Python process with the GIL caps ingest, and in ``radpair serve`` the pipeline, the
scheduler and the Triton client share it. So the listener runs ``listener.workers`` worker
processes (default: one per CPU core; :mod:`radpair.listener.worker`), each a complete listener
with its own database connections and group committer. The parent owns the listening socket:
its accept thread applies the per-address cap, counts open connections (shared with the
workers, so ``max_associations`` holds over all of them: each worker's EVT_REQUESTED handler
reads the shared count), and hands each connection to the worker with the fewest open ones
(:mod:`radpair.listener.handoff`). Handing over is per connection, not per instance.

A worker that dies is logged with its exit status, its connections are released (their peers
see the connection drop, as with any crashed node, and re-send), and it is restarted; nothing
it acknowledged is lost, since an acknowledgement follows the fsync and the commit. The
stability scan runs in the parent's scheduler.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine

from radpair.core.db import session_factory
from radpair.core.settings import Settings
from radpair.listener import handoff, worker
from radpair.listener.access import AccessPolicy
from radpair.listener.ae import tls_context
from radpair.listener.audit import AuditTrail
from radpair.listener.connections import AddressCounts
from radpair.listener.server import schedule_stability

log = logging.getLogger(__name__)

START_TIMEOUT = 120.0
# A worker that dies is restarted after RESTART_DELAY s; one that died within QUICK_DEATH s of its
# start (it cannot start: a broken install, a full disk) only after QUICK_RESTART_DELAY s.
RESTART_DELAY = 1.0
QUICK_DEATH = 10.0
QUICK_RESTART_DELAY = 15.0


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass
class Worker:
    index: int
    process: BaseProcess
    channel: socket.socket
    logs: Connection  # its log records, pickled (a pipe per worker: one that dies cannot jam the others')
    ready: bool = False
    connections: set[tuple[str, int]] = field(default_factory=set)
    handed: int = 0  # connections handed to it since it started
    started: float = field(default_factory=time.monotonic)


class ListenerPool:
    """The listener as a service component (``start(scheduler)`` / ``stop()``), in worker processes."""

    name = "listener"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        lst = settings.listener
        self.sessions = session_factory(engine)
        # Built here only to refuse an unsafe configuration before anything starts (the workers use their own).
        self.access = AccessPolicy(lst, AuditTrail(self.sessions, lst.ae_title))
        self.tls = tls_context(lst) is not None
        self.size = lst.workers or cpu_cores()
        self._mp = multiprocessing.get_context("spawn")
        self._open = self._mp.Value("i", 0)
        self._counts = AddressCounts(lst.max_associations_per_address)
        self._workers: dict[int, Worker] = {}
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._failure: str | None = None
        self._socket: socket.socket | None = None
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        assert self._socket is not None, "listener not started"
        return self._socket.getsockname()[1]

    def workers(self) -> list[Worker]:
        """A snapshot of the workers (for status and tests)."""
        with self._lock:
            return list(self._workers.values())

    def start(self, scheduler: BaseScheduler | None = None) -> None:
        lst = self.settings.listener
        self._socket = _listening_socket(lst.host, lst.port)
        self._stopping.clear()
        with self._lock:
            for index in range(self.size):
                self._workers[index] = self._spawn(index)
        self._spawn_thread(self._supervise, "listener-supervisor")
        self._wait_until_ready()
        self._spawn_thread(self._accept, "listener-accept")
        if scheduler is not None:
            schedule_stability(scheduler, self.sessions, lst)
        log.info("listener: AE %s on %s:%d%s, accepting %s, %d worker processes, data in %s", lst.ae_title,
                 lst.host, self.port, " (TLS)" if self.tls else "", self.access.describe(), self.size,
                 self.settings.data_dir.resolve())

    def stop(self, grace: float = 30.0) -> None:
        """Stop accepting; each worker finishes the stores in flight (new ones get 0xA700) and exits."""
        if self._socket is None:
            return
        self._stopping.set()
        _close(self._socket)
        for w in self.workers():
            if w.process.is_alive():
                w.process.terminate()
        deadline = time.monotonic() + grace + 5
        for w in self.workers():
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                log.warning("listener worker %d (pid %s) did not stop in %.0f s; killing it", w.index,
                            w.process.pid, grace)
                w.process.kill()
                w.process.join()
            w.channel.close()
        for thread in self._threads:
            thread.join(10)
        self._threads.clear()
        self._workers.clear()
        self._socket = None
        log.info("listener: stopped")

    def _spawn_thread(self, target, name: str) -> None:  # noqa: ANN001
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _spawn(self, index: int) -> Worker:
        mine, theirs = handoff.channel_pair()
        logs, their_logs = self._mp.Pipe(duplex=False)
        levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
                  if isinstance(lg, logging.Logger) and lg.level}
        levels[""] = logging.getLogger().level
        process = self._mp.Process(target=worker.run, name=f"radpair-listener-{index}", daemon=True,
                                   args=(index, self.settings, theirs, self._open, their_logs, levels, os.getpid()))
        process.start()
        theirs.close()
        their_logs.close()
        return Worker(index, process, mine, logs)

    def _wait_until_ready(self) -> None:
        with self._lock:
            done = self._lock.wait_for(lambda: self._failure or all(w.ready for w in self._workers.values()),
                                       START_TIMEOUT)
        if self._failure or not done:
            self.stop(grace=0)
            raise RuntimeError(f"listener workers did not start: {self._failure or 'timed out'}")

    def _accept(self) -> None:
        """The accept thread: cap per address, count, hand over to the least busy worker."""
        assert self._socket is not None
        while not self._stopping.is_set():
            try:
                client, address = self._socket.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("listener: accept failed")
                time.sleep(0.1)
                continue
            with client:
                self._hand_over(client, (str(address[0]), int(address[1])))

    def _hand_over(self, client: socket.socket, address: tuple[str, int]) -> None:
        if not self._counts.admit(address[0]):
            return
        with self._lock:
            if not self._lock.wait_for(lambda: any(w.ready for w in self._workers.values()), START_TIMEOUT):
                log.error("listener: no worker is running; closed the connection from %s", address[0])
                self._counts.release(address[0])
                return
            w = min((w for w in self._workers.values() if w.ready), key=lambda w: (len(w.connections), w.handed))
            w.connections.add(address)
            w.handed += 1
            with self._open.get_lock():
                self._open.value += 1
            try:
                handoff.send(w.channel, "connection", *address, fd=client.fileno())
            except OSError as exc:  # it died a moment ago: the supervisor restarts it
                log.warning("listener: cannot hand a connection to worker %d: %s", w.index, exc)
                self._release(w, address)

    def _release(self, w: Worker, address: tuple[str, int]) -> None:
        """Called with the lock held."""
        if address in w.connections:
            w.connections.discard(address)
            self._counts.release(address[0])
            with self._open.get_lock():
                self._open.value -= 1

    def _supervise(self) -> None:
        """Read the workers' messages and log records; restart a worker that died."""
        while not self._stopping.is_set():
            with self._lock:
                by_channel = {w.channel: w for w in self._workers.values()}
                by_logs = {w.logs: w for w in self._workers.values() if not w.logs.closed}
                by_sentinel = {w.process.sentinel: w for w in self._workers.values()}
            ready = multiprocessing.connection.wait([*by_channel, *by_logs, *by_sentinel], timeout=0.5)
            for item in ready:
                if item in by_channel:
                    self._on_message(by_channel[item])
                elif item in by_logs:
                    _forward_log(item)
            for item in ready:
                if item in by_sentinel and not self._stopping.is_set():
                    self._restart(by_sentinel[item])

    def _on_message(self, w: Worker) -> None:
        try:
            message, fds = handoff.receive(w.channel)
        except OSError:
            return
        for fd in fds:
            os.close(fd)
        with self._lock:
            match message:
                case ["closed", host, port]:
                    self._release(w, (host, port))
                case ["ready"]:
                    w.ready = True
                    log.debug("listener worker %d (pid %s) ready", w.index, w.process.pid)
                case ["failed", reason]:
                    self._failure = f"worker {w.index}: {reason}"
                    log.error("listener worker %d could not start: %s", w.index, reason)
                case []:
                    pass  # the worker exited; its sentinel says so
                case _:
                    log.warning("listener worker %d sent an unexpected message: %r", w.index, message)
            self._lock.notify_all()

    def _restart(self, w: Worker) -> None:
        w.process.join()
        while not w.logs.closed and w.logs.poll():  # its last words first
            _forward_log(w.logs)
        with self._lock:
            lost = len(w.connections)
            for address in list(w.connections):
                self._release(w, address)
            w.ready = False
            w.channel.close()
            w.logs.close()
            del self._workers[w.index]
            self._lock.notify_all()
            if self._failure:
                return
        log.warning("listener worker %d (pid %s) exited with status %s; %d connections lost, restarting it",
                    w.index, w.process.pid, w.process.exitcode, lost)
        quick = time.monotonic() - w.started < QUICK_DEATH
        threading.Timer(QUICK_RESTART_DELAY if quick else RESTART_DELAY, self._respawn, args=(w.index,)).start()

    def _respawn(self, index: int) -> None:
        with self._lock:
            if not self._stopping.is_set():
                self._workers[index] = self._spawn(index)


def _forward_log(logs: Connection) -> None:
    """Handle one of a worker's log records with this process's loggers (one log, one format)."""
    try:
        record = logs.recv()
    except (EOFError, OSError):
        logs.close()
        return
    logging.getLogger(record.name).handle(record)


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(socket.SOMAXCONN)
    return sock


def _close(sock: socket.socket) -> None:
    """Close a listening socket and wake the thread blocked in its accept()."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
