"""Free loopback ports for the real servers the tests start."""

from __future__ import annotations

import socket

_given: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this process: the kernel may return a port
    just closed, so two calls in a row (Triton's HTTP and metrics ports) could otherwise collide."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _given:
            _given.add(port)
            return port
