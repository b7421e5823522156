"""Peers that connect and say nothing cannot stall the listener (issue 16, item 1).

Before: one idle TCP connection to the TLS port blocked every TLS client (pynetdicom's handshake
ran in the accept thread without a timeout), and idle sockets could hold every association slot.
Real DCMTK clients, real sockets; no timing assertions, only bounded waits."""

from __future__ import annotations

import socket
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.listener.test_tls import _self_signed, _tls


def _idle(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))


def _closed_by_server(sock: socket.socket, wait: float) -> bool:
    """True when the server closes (or aborts) the connection within ``wait`` seconds."""
    sock.settimeout(wait)
    try:
        return sock.recv(64) is not None  # b"" (closed) or an A-ABORT PDU
    except (TimeoutError, socket.timeout):
        return False
    except OSError:
        return True


def test_an_idle_socket_does_not_block_tls_clients(start_listener, tmp_path: Path) -> None:  # noqa: ANN001
    server_key, server_cert = _self_signed(tmp_path, "server")
    client_key, client_cert = _self_signed(tmp_path, "client")
    listener = start_listener(**{"listener.tls_cert": str(server_cert), "listener.tls_key": str(server_key),
                                 "listener.request_timeout": 30.0})
    with ExitStack() as stack:
        stack.enter_context(_idle(listener.port))  # TCP connected, no ClientHello, held open
        echo = _tls("echoscu", listener, client_key, client_cert, server_cert)
        assert echo.returncode == 0, echo.stderr


def test_a_connection_that_never_asks_is_closed(start_listener) -> None:  # noqa: ANN001
    listener = start_listener(**{"listener.request_timeout": 1.0})
    with _idle(listener.port) as sock:
        assert _closed_by_server(sock, wait=20.0), "the listener kept a silent connection open"


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_one_address_cannot_take_every_slot(start_listener, processes: bool) -> None:  # noqa: ANN001
    listener = start_listener(processes=processes, **{"listener.workers": 2, "listener.max_associations": 16,
                                                      "listener.max_associations_per_address": 8,
                                                      "listener.request_timeout": 60.0})
    with ExitStack() as stack:
        flood = [stack.enter_context(_idle(listener.port, source="127.0.0.2")) for _ in range(16)]
        refused = sum(_closed_by_server(sock, wait=2.0) for sock in flood)
        assert refused == 8, f"{refused} of 16 flood connections were closed at once; the cap is 8"
        echo = listener.echoscu()
        assert echo.returncode == 0, echo.stdout + echo.stderr
