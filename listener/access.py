"""Who may associate: the calling-AE allow-list (optionally pinned to a source host), and how many.

Checked when the A-ASSOCIATE-RQ arrives (pynetdicom's EVT_REQUESTED), so an unknown peer gets a
proper A-ASSOCIATE-RJ "calling AE title not recognised" before it can send anything, a peer that
calls another AE title than ours gets "called AE title not recognised" (``check_called_ae``), and
a peer beyond ``max_associations`` gets "local limit exceeded". The refusal is written to the
audit trail before the A-ASSOCIATE-RJ is sent: once a peer sees it, the audit says so.

A host in ``allowed_peers`` may be a name: it is resolved at start (a name that does not resolve
stops the start with a message naming it) and again every ``peer_resolve_ttl`` seconds; if a
later resolution fails, the addresses last resolved stay in force (and the failure is logged).

The policy also installs the listener's per-instance limits (:mod:`radpair.listener.header`),
which the C-STORE handler enforces through ``read_header``.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable

from pynetdicom import AE, evt
from pynetdicom.events import Event

from radpair.core.config import ConfigError
from radpair.core.settings import ListenerSettings
from radpair.listener.audit import AuditTrail, escape

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic) and the words for the audit.
REJECT_UNKNOWN_CALLING_AE = ((0x01, 0x01, 0x03), "calling AE title not recognised")
REJECT_UNKNOWN_CALLED_AE = ((0x01, 0x01, 0x07), "called AE title not recognised")
REJECT_LOCAL_LIMIT = ((0x02, 0x03, 0x02), "local limit exceeded")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve(host: str) -> frozenset[str]:
    """The addresses of ``host`` (itself when it is an IP address); OSError when a name does not resolve."""
    try:
        return frozenset({str(ipaddress.ip_address(host))})
    except ValueError:
        pass
    infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return frozenset(str(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos)


class PeerAddresses:
    """The addresses each host name of ``allowed_peers`` stands for, refreshed every ``ttl`` seconds."""

    def __init__(self, hosts: set[str], ttl: float) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._resolved: dict[str, frozenset[str]] = {}
        for host in hosts:
            try:
                self._resolved[host] = resolve(host)
            except OSError as exc:
                raise ConfigError(f"settings key 'listener.allowed_peers' names host {host!r}, which does not "
                                  f"resolve: {exc}; use an IP address or fix the name") from exc
        self._expires = time.monotonic() + ttl

    def of(self, host: str) -> frozenset[str]:
        with self._lock:
            if time.monotonic() >= self._expires:
                self._refresh()
            return self._resolved.get(host, frozenset())

    def _refresh(self) -> None:
        for host, previous in list(self._resolved.items()):
            try:
                self._resolved[host] = resolve(host)
            except OSError as exc:
                log.warning("allowed peer host %r does not resolve now (%s); keeping %s", host, exc,
                            ", ".join(sorted(previous)))
        self._expires = time.monotonic() + self._ttl


class AccessPolicy:
    """Decides, per association request, whether the calling AE (and its address) may connect."""

    def __init__(self, settings: ListenerSettings, audit: AuditTrail) -> None:
        self._audit = audit
        self._max_associations = settings.max_associations
        self._called_ae = settings.ae_title.strip() if settings.check_called_ae else None
        self._peers = [(p.ae_title.strip(), p.host.strip()) for p in settings.allowed_peers]
        self.accept_any = settings.accept_any_calling_ae and not self._peers
        if self.accept_any and not is_loopback(settings.host):
            raise ConfigError(
                f"settings key 'listener.accept_any_calling_ae' is true with listener.host "
                f"{settings.host!r}: accepting any calling AE is only allowed on loopback; "
                "configure 'listener.allowed_peers' instead"
            )
        if not self.accept_any and not self._peers:
            raise ConfigError("settings key 'listener.allowed_peers' is empty and "
                                "'listener.accept_any_calling_ae' is false: nobody could connect")
        self._addresses = PeerAddresses({host for _, host in self._peers if host}, settings.peer_resolve_ttl)
        # How many associations are open, the one being requested included (a worker process of a
        # multi-process listener replaces it with the count over all workers).
        self.count_open: Callable[[AE], int] = lambda ae: sum(1 for a in ae.active_associations if a.is_acceptor)

    def describe(self) -> str:
        if self.accept_any:
            return "any calling AE (loopback only)"
        return ", ".join(f"{ae}@{host}" if host else ae for ae, host in self._peers)

    def allows(self, calling_ae: str, address: str) -> bool:
        if self.accept_any:
            return True
        peer = _canonical(address)
        return any(calling_ae == ae and (not host or peer in self._addresses.of(host)) for ae, host in self._peers)

    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED handler: reject before negotiation a peer that is not allowed, or one too many."""
        assoc = event.assoc
        calling = escape(assoc.requestor.primitive.calling_ae_title.strip())
        called = assoc.requestor.primitive.called_ae_title.strip()
        refusal = None
        if not self.allows(calling, assoc.requestor.address):
            refusal = REJECT_UNKNOWN_CALLING_AE
        elif self._called_ae is not None and called != self._called_ae:
            refusal = REJECT_UNKNOWN_CALLED_AE
        elif self.count_open(assoc.ae) > self._max_associations:
            refusal = REJECT_LOCAL_LIMIT
        if refusal is None:
            return
        (result, source, diagnostic), reason = refusal
        self._audit.rejected(assoc, calling, reason)
        assoc.acse.send_reject(result, source, diagnostic)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()


def _canonical(address: str) -> str:
    """An IP address in one spelling (an IPv4-mapped IPv6 peer compares as its IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return address
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)
