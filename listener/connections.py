"""Accepting connections so that no peer can stall the others.

pynetdicom's ``ThreadedAssociationServer`` performs the TLS handshake inside its single accept
thread, without a timeout: one idle TCP connection to a TLS listener blocks every other client.
Here the accept thread only accepts: the handshake runs in the connection's own thread under
``request_timeout``, a connection from an address that already holds
``max_associations_per_address`` connections is closed at once, and a peer gets
``request_timeout`` seconds (the AE's ACSE timeout) to send its A-ASSOCIATE-RQ.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
from collections import Counter

from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

log = logging.getLogger(__name__)


class AddressCounts:
    """Open connections per peer address, at most ``per_address`` each (thread-safe)."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def admit(self, host: str) -> bool:
        """Count a new connection from ``host``, or refuse it (logged) when the host is at its cap."""
        with self._lock:
            if self._open[host] >= self.per_address:
                log.warning("listener: refused a connection from %s: it already holds %d", host, self._open[host])
                return False
            self._open[host] += 1
        return True

    def release(self, host: str) -> None:
        with self._lock:
            self._open[host] -= 1
            if self._open[host] <= 0:
                del self._open[host]


class GuardedAssociationServer(ThreadedAssociationServer):
    """A threaded association server with the TLS handshake off the accept thread and a
    per-address connection cap (``AE.make_server(..., server_class=GuardedAssociationServer,
    per_address=N, handshake_timeout=S)``)."""

    def __init__(self, *args, per_address: int, handshake_timeout: float, **kwargs) -> None:
        self.counts = AddressCounts(per_address)
        self.handshake_timeout = handshake_timeout
        super().__init__(*args, **kwargs)
        # A connection counts from its accept until its association's socket closes.
        self.bind(evt.EVT_CONN_CLOSE, self._on_closed)

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        client, address = self.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        """The next connection (here: from the listening socket)."""
        return self.socket.accept()

    def verify_request(self, request: socket.socket, client_address: tuple[str, int]) -> bool:  # type: ignore[override]
        """Runs in the accept thread: refuse (close) a connection over the address's cap."""
        return self.counts.admit(str(client_address[0]))

    def process_request_thread(self, request: socket.socket, client_address: tuple[str, int]) -> None:  # type: ignore[override]
        """Runs in the connection's thread: the TLS handshake under a timeout, then pynetdicom's
        association (which runs in a thread of its own and releases the count when it closes)."""
        if isinstance(request, ssl.SSLSocket) and not self._handshake(request, client_address):
            self.shutdown_request(request)
            self.release(client_address)
            return
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
            self.shutdown_request(request)
            self.release(client_address)

    def _on_closed(self, event: Event) -> None:
        self.release((str(event.assoc.requestor.address), int(event.assoc.requestor.port)))

    def release(self, client_address: tuple[str, int]) -> None:
        """A connection counted by :meth:`verify_request` has ended."""
        self.counts.release(str(client_address[0]))

    def _handshake(self, request: ssl.SSLSocket, client_address: tuple[str, int]) -> bool:
        previous = request.gettimeout()
        request.settimeout(self.handshake_timeout)
        try:
            request.do_handshake()
        except (OSError, ssl.SSLError) as exc:
            log.warning("listener: TLS handshake with %s failed: %s", client_address[0], exc)
            return False
        request.settimeout(previous)
        return True

    def shutdown(self) -> None:
        """Stop accepting and close the socket. (pynetdicom's own ``shutdown`` also deregisters the
        server from ``AE.start_server``'s list, which this server, started by the listener, is not in.)"""
        socketserver.BaseServer.shutdown(self)
        self.server_close()
