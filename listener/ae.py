"""The pynetdicom application entity: what the listener accepts and how its sockets behave."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable

from pydicom._uid_dict import UID_dictionary
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, AE
from pynetdicom.events import Event
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import Verification, register_uid, uid_to_service_class

from radpair.core.settings import ListenerSettings


STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."


def storage_sop_classes() -> list[str]:
    """pynetdicom's storage SOP classes plus the retired and trial ones in pydicom's UID registry
    (archives still hold e.g. retired Ultrasound Image Storage, and a PACS forwards them). The
    extra ones are registered with pynetdicom as Storage Service classes (idempotent)."""
    current = [context.abstract_syntax for context in AllStoragePresentationContexts]
    extra = {}
    for uid, (name, kind, _info, _retired, keyword) in UID_dictionary.items():
        if uid.startswith(STORAGE_ROOT) and kind == "SOP Class" and "Storage" in name and uid not in current:
            extra[uid] = keyword or f"StorageSOPClass_{uid.replace('.', '_')}"
    for uid, keyword in extra.items():
        if uid_to_service_class(uid) is not StorageServiceClass:
            register_uid(uid, keyword, StorageServiceClass)
    return [*current, *extra]


def build_ae(settings: ListenerSettings) -> AE:
    """Verification plus every storage SOP class (images incl. enhanced multi-frame, all SR
    classes, encapsulated PDF, SEG, KOS, parametric maps, retired ones), each with every transfer
    syntax pynetdicom knows, compressed ones included: bytes are stored as they arrive."""
    ae = AE(ae_title=settings.ae_title)
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for sop_class in storage_sop_classes():
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = settings.max_pdu
    # Beyond this, pynetdicom answers A-ASSOCIATE-RJ "local limit exceeded".
    ae.maximum_associations = settings.max_associations
    # A connection that has not sent its A-ASSOCIATE-RQ by then is closed, freeing its slot.
    ae.acse_timeout = settings.request_timeout
    ae.require_called_aet = False
    return ae


def tls_context(settings: ListenerSettings) -> ssl.SSLContext | None:
    """Server-side TLS from PEM files; with ``tls_require_client_cert`` peers must present a
    certificate signed by ``tls_ca`` (mutual TLS)."""
    if not settings.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_ca:
        context.load_verify_locations(cafile=settings.tls_ca)
    context.verify_mode = ssl.CERT_REQUIRED if settings.tls_require_client_cert else ssl.CERT_NONE
    return context


def set_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: disable Nagle on the accepted socket. Without it every response
    PDU waits for the peer's delayed ACK (~40 ms per instance on loopback)."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def poll_delay(seconds: float) -> Callable[[Event], None]:
    """An EVT_CONN_OPEN handler setting how long the connection's DUL reactor sleeps between socket
    polls when idle (pynetdicom's ``_run_loop_delay``, 1 ms by default: a latency every received
    PDU pays). Shorter answers sooner at the cost of more wake-ups of an idle association."""
    def handler(event: Event) -> None:
        event.assoc.dul._run_loop_delay = seconds

    return handler
