"""C-STORE SCU: send DICOM datasets or files to a peer (a PACS, radpair's own listener, storescp).

One association per study, proposing exactly the presentation contexts the instances being sent
need (their SOP classes, each with its own transfer syntax, plus the other uncompressed ones when
it is uncompressed, so the peer may pick). A failure of one instance is reported in its
:class:`StoreOutcome` and never stops the others; only a peer that cannot be associated with at
all raises :class:`PeerUnavailable`.
"""

from __future__ import annotations

import copy
import logging
import socket
import ssl
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

log = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1..255
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_STORED = ("Success", "Warning")


class PeerUnavailable(ConnectionError):
    """No association could be established (refused, rejected, timed out); ``outcomes`` holds
    the outcomes of the instances handled before it, in input order."""

    def __init__(self, message: str, outcomes: Sequence["StoreOutcome"] = ()) -> None:
        super().__init__(message)
        self.outcomes = list(outcomes)


@dataclass(frozen=True)
class Peer:
    host: str
    port: int
    called_aet: str
    calling_aet: str = "RADPAIR"
    tls: ssl.SSLContext | None = None
    timeout: float = 30.0  # seconds for association set-up, each response and the network

    def __str__(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


@dataclass(frozen=True)
class StoreOutcome:
    sop_instance_uid: str
    path: Path | None
    status: int | None  # the peer's C-STORE status; None when no response was received
    error: str  # empty when stored (success or warning status)

    @property
    def ok(self) -> bool:
        return self.status is not None and code_to_category(self.status) in _STORED


@dataclass(frozen=True)
class _Item:
    """One instance to send: an in-memory dataset or a file, with what the contexts need."""

    index: int  # position in the caller's input: outcomes come back in input order
    payload: Dataset | Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    study: str


def store_datasets(datasets: Iterable[Dataset], peer: Peer) -> list[StoreOutcome]:
    """C-STORE in-memory datasets, one association per study; one outcome per dataset, in input order."""
    items, early = [], []
    for index, ds in enumerate(datasets):
        if "SOPClassUID" not in ds or "SOPInstanceUID" not in ds:
            early.append((index, StoreOutcome(str(ds.get("SOPInstanceUID", "")), None, None, "dataset has no SOP Class/Instance UID")))
            continue
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is None:  # pynetdicom needs one to pick a context; uncompressed is the only safe guess
            ds = copy.copy(ds)
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = syntax = ExplicitVRLittleEndian
        items.append(_Item(index, ds, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(syntax), str(ds.get("StudyInstanceUID", ""))))
    return _store(items, early, peer)


def store_files(paths: Iterable[str | Path], peer: Peer) -> list[StoreOutcome]:
    """C-STORE DICOM files, one association per study; one outcome per path, in input order
    (unreadable files included)."""
    items, early = [], []
    for index, raw in enumerate(paths):
        path = Path(raw)
        try:
            header = dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "SOPClassUID", "SOPInstanceUID"])
            meta = header.file_meta
            items.append(_Item(index, path, str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                               str(meta.TransferSyntaxUID), str(header.get("StudyInstanceUID", ""))))
        except (InvalidDicomError, OSError, AttributeError, ValueError) as exc:
            early.append((index, StoreOutcome("", path, None, f"not a readable DICOM file with file meta: {exc}")))
    return _store(items, early, peer)


def _context_key(item: _Item) -> tuple[str, tuple[str, ...]]:
    """The SOP class with the item's transfer syntax first, then the other uncompressed ones if
    it is uncompressed (the peer may pick; pynetdicom converts between those)."""
    syntax = UID(item.transfer_syntax)
    if syntax in _UNCOMPRESSED:
        return item.sop_class, (str(syntax), *(str(s) for s in _UNCOMPRESSED if s != syntax))
    return item.sop_class, (str(syntax),)


def _batches(items: Sequence[_Item]) -> Iterator[tuple[list[_Item], list[PresentationContext]]]:
    """Per study, the items and the contexts they need; a study is split only when it needs more
    presentation contexts than one association can carry."""
    studies: dict[str, list[_Item]] = defaultdict(list)
    for item in items:
        studies[item.study].append(item)
    for group in studies.values():
        batch: list[_Item] = []
        keys: dict[tuple[str, tuple[str, ...]], None] = {}
        for item in group:
            key = _context_key(item)
            if key not in keys and len(keys) == MAX_CONTEXTS:
                yield batch, [build_context(sop, list(syntaxes)) for sop, syntaxes in keys]
                batch, keys = [], {}
            keys[key] = None
            batch.append(item)
        yield batch, [build_context(sop, list(syntaxes)) for sop, syntaxes in keys]


def _set_nodelay(event: evt.Event) -> None:
    """EVT_CONN_OPEN: disable Nagle, else each request waits ~40 ms for a delayed ACK on loopback."""
    if event.assoc.dul.socket is not None and event.assoc.dul.socket.socket is not None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _NothingAccepted(Exception):
    """The peer answered but accepted none of the proposed presentation contexts."""


def _associate(peer: Peer, contexts: list[PresentationContext]) -> Association:
    ae = AE(ae_title=peer.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = peer.timeout
    tls_args = (peer.tls, peer.host) if peer.tls is not None else None
    answered: list[bool] = []
    assoc = ae.associate(peer.host, peer.port, contexts=contexts, ae_title=peer.called_aet, tls_args=tls_args,
                         evt_handlers=[(evt.EVT_CONN_OPEN, _set_nodelay), (evt.EVT_ACCEPTED, lambda event: answered.append(True))])
    if not assoc.is_established:
        if answered:  # pynetdicom aborts an accepted association without any usable context
            raise _NothingAccepted()
        why = "association rejected by the peer" if assoc.is_rejected else "connection refused, timed out or aborted"
        raise PeerUnavailable(f"cannot associate with {peer}: {why}")
    return assoc


def _describe(status: int) -> str:
    category, text = STORAGE_SERVICE_CLASS_STATUS.get(status, (code_to_category(status), ""))
    return f"{category} 0x{status:04X}" + (f": {text}" if text else "")


def _send_one(assoc: Association, item: _Item, msg_id: int) -> StoreOutcome:
    path = item.payload if isinstance(item.payload, Path) else None
    if not assoc.is_established:
        return StoreOutcome(item.sop_instance, path, None, "association lost before this instance was sent")
    try:
        response = assoc.send_c_store(item.payload, msg_id=msg_id)
    except (ValueError, AttributeError, OSError, InvalidDicomError) as exc:
        return StoreOutcome(item.sop_instance, path, None, f"not sent: {exc}")
    if "Status" not in response:
        return StoreOutcome(item.sop_instance, path, None, "no response (timeout or association aborted)")
    status = int(response.Status)
    error = "" if code_to_category(status) in _STORED else _describe(status)
    comment = response.get("ErrorComment")
    return StoreOutcome(item.sop_instance, path, status, f"{error} ({comment})" if error and comment else error)


def _store(items: Sequence[_Item], early: list[tuple[int, StoreOutcome]], peer: Peer) -> list[StoreOutcome]:
    done = list(early)

    def in_order() -> list[StoreOutcome]:
        return [outcome for _, outcome in sorted(done, key=lambda pair: pair[0])]

    for batch, contexts in _batches(items):
        started = time.monotonic()
        try:
            assoc = _associate(peer, contexts)
        except _NothingAccepted:
            done += [(item.index, StoreOutcome(
                item.sop_instance, item.payload if isinstance(item.payload, Path) else None, None,
                f"{peer} accepted no presentation context for SOP class {item.sop_class} in transfer syntax "
                f"{item.transfer_syntax}")) for item in batch]
            continue
        except PeerUnavailable as exc:
            raise PeerUnavailable(str(exc), in_order()) from None
        except (OSError, RuntimeError) as exc:
            raise PeerUnavailable(f"cannot associate with {peer}: {exc}", in_order()) from exc
        try:
            sent = [_send_one(assoc, item, msg_id=i % 65535 + 1) for i, item in enumerate(batch)]
        finally:
            if assoc.is_established:
                assoc.release()
        failed = sum(1 for outcome in sent if not outcome.ok)
        log.info("C-STORE %s: study %s, %d instances, %d failed, %.2f s", peer, batch[0].study or "?",
                 len(sent), failed, time.monotonic() - started)
        done += [(item.index, outcome) for item, outcome in zip(batch, sent)]
    return in_order()
