"""Who may associate: the calling-AE allow-list (optionally pinned to a source host), and how many.

Checked when the A-ASSOCIATE-RQ arrives (pynetdicom's EVT_REQUESTED), so an unknown peer gets a
proper A-ASSOCIATE-RJ "calling AE title not recognised" before it can send anything, and a peer
beyond ``max_associations`` gets "local limit exceeded". The refusal is written to the audit trail
before the A-ASSOCIATE-RJ is sent: once a peer sees it, the audit says so.
"""

from __future__ import annotations

import ipaddress
import logging

from pynetdicom import evt
from pynetdicom.events import Event

from radpair.core.config import ConfigError
from radpair.core.settings import ListenerSettings
from radpair.listener.audit import AuditTrail

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic) and the words for the audit.
REJECT_UNKNOWN_CALLING_AE = ((0x01, 0x01, 0x03), "calling AE title not recognised")
REJECT_LOCAL_LIMIT = ((0x02, 0x03, 0x02), "local limit exceeded")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccessPolicy:
    """Decides, per association request, whether the calling AE (and its address) may connect."""

    def __init__(self, settings: ListenerSettings, audit: AuditTrail) -> None:
        self._audit = audit
        self._max_associations = settings.max_associations
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

    def describe(self) -> str:
        if self.accept_any:
            return "any calling AE (loopback only)"
        return ", ".join(f"{ae}@{host}" if host else ae for ae, host in self._peers)

    def allows(self, calling_ae: str, address: str) -> bool:
        if self.accept_any:
            return True
        return any(calling_ae == ae and (not host or host == address) for ae, host in self._peers)

    def on_requested(self, event: Event) -> None:
        """EVT_REQUESTED handler: reject before negotiation a peer that is not allowed, or one too many."""
        assoc = event.assoc
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        refusal = None
        if not self.allows(calling, assoc.requestor.address):
            refusal = REJECT_UNKNOWN_CALLING_AE
        elif sum(1 for a in assoc.ae.active_associations if a.is_acceptor) > self._max_associations:
            refusal = REJECT_LOCAL_LIMIT
        if refusal is None:
            return
        (result, source, diagnostic), reason = refusal
        self._audit.rejected(assoc, calling, reason)
        assoc.acse.send_reject(result, source, diagnostic)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()
