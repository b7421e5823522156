"""Handing accepted connections from the listener's parent process to its worker processes.

The parent accepts every connection (one place enforces the per-address cap and counts what is
open) and passes the socket to a worker over a Unix ``SOCK_SEQPACKET`` pair with ``SCM_RIGHTS``
(:func:`socket.send_fds`). Each message is one JSON array:

| direction | message | ancillary data |
| --------- | ------- | -------------- |
| parent → worker | ``["connection", host, port]`` | the connection's file descriptor |
| worker → parent | ``["ready"]`` once it serves; ``["failed", reason]`` if it cannot start | |
| worker → parent | ``["closed", host, port]`` when that connection has ended | |

In the worker, :class:`HandedAssociationServer` is pynetdicom's association server with the
channel in place of a listening socket: its ``serve_forever`` loop waits on the channel, and
everything after the accept (TLS handshake off the loop thread, the association, its handlers)
is unchanged.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable

from radpair.listener.connections import GuardedAssociationServer

log = logging.getLogger(__name__)

MAX_MESSAGE = 4096


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(parent's end, worker's end)."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send(channel: socket.socket, *message: object, fd: int | None = None) -> None:
    data = json.dumps(message).encode()
    if fd is None:
        channel.send(data)
    else:
        socket.send_fds(channel, [data], [fd])


def receive(channel: socket.socket) -> tuple[list, list[int]]:
    """One message and the descriptors that came with it; ``([], [])`` when the other end closed."""
    data, fds, _flags, _address = socket.recv_fds(channel, MAX_MESSAGE, 1)
    return (json.loads(data) if data else []), fds


class HandedAssociationServer(GuardedAssociationServer):
    """A worker's association server: connections arrive over ``channel`` from the parent, which
    has already counted them; their end is reported back. ``parent_gone`` is called when the
    channel closes (the parent exited)."""

    def __init__(self, *args, channel: socket.socket, parent_gone: Callable[[], None], **kwargs) -> None:
        self.channel = channel
        self.parent_gone = parent_gone
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        """No socket of its own: the loop waits on the channel (its address stays the parent's)."""
        self.socket.close()
        self.socket = self.channel

    def server_activate(self) -> None:
        pass

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        message, fds = receive(self.channel)
        if not message:
            self.parent_gone()
            raise OSError("the listener's parent process closed the channel")
        kind, host, port = message
        if kind != "connection" or len(fds) != 1:
            for fd in fds:
                socket.close(fd)
            raise OSError(f"unexpected message from the listener's parent: {message!r}")
        return socket.socket(fileno=fds[0]), (host, port)

    def verify_request(self, request: socket.socket, client_address: tuple[str, int]) -> bool:  # type: ignore[override]
        return True  # the parent applied the per-address cap before handing it over

    def release(self, client_address: tuple[str, int]) -> None:
        try:
            send(self.channel, "closed", *client_address)
        except OSError as exc:  # the parent is gone; it recounts from scratch when restarted
            log.debug("listener worker: cannot report a closed connection: %s", exc)
