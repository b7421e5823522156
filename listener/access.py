"""Who may associate: the calling-AE allow-list (optionally pinned to a source host).

Checked when the A-ASSOCIATE-RQ arrives (pynetdicom's EVT_REQUESTED), so an unknown peer gets a
proper A-ASSOCIATE-RJ "calling AE title not recognised" before it can send anything.
"""

from __future__ import annotations

import ipaddress
import logging

from pynetdicom import evt
from pynetdicom.events import Event

from core.settings import ListenerSettings, SettingsError

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ: rejected-permanent, DUL service-user, calling AE title not recognised.
REJECT_UNKNOWN_CALLING_AE = (0x01, 0x01, 0x03)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AccessPolicy:
    """Decides, per association request, whether the calling AE (and its address) may connect."""

    def __init__(self, settings: ListenerSettings) -> None:
        self._peers = [(p.ae_title.strip(), p.host.strip()) for p in settings.allowed_peers]
        self.accept_any = settings.accept_any_calling_ae and not self._peers
        if self.accept_any and not is_loopback(settings.host):
            raise SettingsError(
                f"settings key 'listener.accept_any_calling_ae' is true with listener.host "
                f"{settings.host!r}: accepting any calling AE is only allowed on loopback; "
                "configure 'listener.allowed_peers' instead"
            )
        if not self.accept_any and not self._peers:
            raise SettingsError("settings key 'listener.allowed_peers' is empty and "
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
        """EVT_REQUESTED handler: reject before negotiation when the peer is not allowed."""
        assoc = event.assoc
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        address = assoc.requestor.address
        if not self.allows(calling, address):
            assoc.acse.send_reject(*REJECT_UNKNOWN_CALLING_AE)
            evt.trigger(assoc, evt.EVT_REJECTED, {})
            assoc.kill()
