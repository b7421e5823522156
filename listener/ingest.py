"""The C-STORE handler: durable ingest of one instance, answered with the right DICOM status.

0x0000 is returned only after the file is fsync'd and its row committed (concurrent stores share
the commit: listener.committer). The dataset is never
decoded: the bytes the peer sent are stored as-is behind a fresh 128-byte zero preamble and a
new File Meta header (never the sender's preamble: CVE-2019-11687).

| status | when |
| ------ | ---- |
| 0x0000 | stored; or an identical re-send; or a changed re-send under ``keep_first`` |
| 0xA700 | out of resources: free disk below ``disk_reserve``, the disk write failed (e.g. full) or the database is unreachable (at once while it stays down: listener.backpressure), or the listener is shutting down; transient, not quarantined (the sender still has it and retries) |
| 0xA900 | the dataset's SOP Class UID differs from the presentation context's; quarantined |
| 0xC000 | cannot understand: does not parse, a required UID is missing or malformed, or its SOP Instance UID differs from the request's; quarantined |
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pydicom.dataset import Dataset
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.events import Event

from radpair.core.store import InstanceStore
from radpair.listener.archive import Archive, ArchiveUnavailable, Received
from radpair.listener.audit import AuditTrail
from radpair.listener.backpressure import IngestGate
from radpair.listener.committer import GroupCommitter
from radpair.listener.header import HeaderError, read_header
from radpair.listener.quarantine import Quarantine
from radpair.listener.reports import REPORT_SOP_CLASSES, ParsedReport, parse_report

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
PREAMBLE = b"\x00" * 128 + b"DICM"
_STRIPES = 1024


class StoreRefused(Exception):
    """``logged``: False for back-pressure refusals (the gate logs the state, not each instance)."""

    def __init__(self, status: int, reason: str, quarantine: bool, logged: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.quarantine = quarantine
        self.logged = logged


class Ingestor:
    """Bound to EVT_C_STORE. One per listener; called concurrently from association threads."""

    def __init__(self, store: InstanceStore, archive: Archive, quarantine: Quarantine, audit: AuditTrail,
                 gate: IngestGate, commit_batch: int = 1, commit_window: float = 0.0) -> None:
        self.store = store
        self.gate = gate
        self.committer = GroupCommitter(archive, commit_batch, commit_window, in_flight=lambda: self._inflight)
        self.quarantine = quarantine
        self.audit = audit
        self._uid_locks = [threading.Lock() for _ in range(_STRIPES)]
        self._inflight = 0
        self._draining = False
        self._idle = threading.Condition()

    def start(self) -> None:
        self._draining = False
        self.committer.start()

    def close(self) -> None:
        """After :meth:`drain`: commit what was handed in and stop the committer."""
        self.committer.close()

    def drain(self, timeout: float) -> bool:
        """Refuse new stores (0xA700) and wait for the ones in flight to finish."""
        with self._idle:
            self._draining = True
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        with self._idle:
            if self._draining:
                raise StoreRefused(OUT_OF_RESOURCES, "listener is shutting down", quarantine=False)
            self._inflight += 1
        try:
            yield
        finally:
            with self._idle:
                self._inflight -= 1
                self._idle.notify_all()

    def on_store(self, event: Event) -> Dataset | int:
        stats = self.audit.stats(event.assoc)
        raw = event.encoded_dataset(include_meta=False)
        try:
            with self._in_flight():
                if (busy := self.gate.refusal(len(raw))) is not None:
                    raise StoreRefused(OUT_OF_RESOURCES, busy, quarantine=False, logged=False)
                status = self._ingest(event, raw, stats.calling_ae, stats.pk)
        except StoreRefused as refused:
            stats.failures += 1
            request_uid = str(event.request.AffectedSOPInstanceUID or "")
            if refused.quarantine:
                self.quarantine.keep(raw, refused.reason, refused.status, stats.calling_ae,
                                     f"{stats.address}:{stats.port}", request_uid, str(event.context.transfer_syntax))
            elif refused.logged:
                log.warning("refused %s from %s: %s (0x%04X)", request_uid, stats.calling_ae, refused.reason,
                            refused.status)
            rsp = Dataset()
            rsp.Status = refused.status
            rsp.ErrorComment = refused.reason[:64]
            return rsp
        if status == "stored":
            stats.stored += 1
            stats.bytes += len(raw)
        else:
            stats.duplicates += 1
        return SUCCESS

    def _ingest(self, event: Event, raw: bytes, calling_ae: str, association_pk: int | None) -> str:
        context = event.context
        meta = event.file_meta
        meta.SourceApplicationEntityTitle = calling_ae
        data = b"".join((PREAMBLE, encode_file_meta(meta), raw))
        try:
            header = read_header(data, str(context.transfer_syntax))
        except HeaderError as exc:
            raise StoreRefused(CANNOT_UNDERSTAND, str(exc), quarantine=True) from exc
        except Exception as exc:  # anything pydicom trips on is the dataset's fault, not ours
            raise StoreRefused(CANNOT_UNDERSTAND, f"dataset does not parse: {exc}", quarantine=True) from exc
        if header.sop_class_uid != context.abstract_syntax:
            raise StoreRefused(SOP_CLASS_MISMATCH, f"SOP Class {header.sop_class_uid} does not match the "
                               f"presentation context {context.abstract_syntax}", quarantine=True)
        if header.sop_instance_uid != str(event.request.AffectedSOPInstanceUID):
            raise StoreRefused(CANNOT_UNDERSTAND, "SOP Instance UID differs from the request's", quarantine=True)
        sha256 = hashlib.sha256(raw).hexdigest()
        relative = self.store.relative_path(header.study_uid, header.series_uid, header.sop_instance_uid)
        report = self._report(data, header.sop_class_uid, header.sop_instance_uid)
        try:
            staged = self.store.stage(relative, (data,))  # written and fsync'd here, renamed when indexed
            try:
                # One SOP Instance UID is never indexed by two threads at once (insert → compare → publish).
                with self._uid_locks[hash(header.sop_instance_uid) % _STRIPES]:
                    indexed = self.committer.index(Received(header, relative, len(data), sha256, calling_ae,
                                                            association_pk, report, staged))
            finally:
                staged.discard()
        except ArchiveUnavailable as exc:
            self.gate.database_failed()
            raise StoreRefused(OUT_OF_RESOURCES, str(exc), quarantine=False) from exc
        except OSError as exc:
            raise StoreRefused(OUT_OF_RESOURCES, f"cannot write the instance: {exc.strerror or exc}",
                               quarantine=False) from exc
        self.gate.database_ok()
        if indexed.outcome == "kept_first":
            log.warning("instance %s re-sent with other bytes: kept the first (on_changed_duplicate=keep_first)",
                        header.sop_instance_uid)
            self.quarantine.keep(raw, "changed re-send of an archived instance: kept the first version",
                                 SUCCESS, calling_ae, "", header.sop_instance_uid, header.transfer_syntax_uid)
        elif indexed.outcome == "replaced":
            log.warning("instance %s re-sent with other bytes: replaced (on_changed_duplicate=replace)",
                        header.sop_instance_uid)
            if indexed.previous is not None and indexed.previous.path != relative:
                self.store.absolute(indexed.previous.path).unlink(missing_ok=True)
        return "stored" if indexed.outcome in ("stored", "replaced") else "duplicate"

    @staticmethod
    def _report(data: bytes, sop_class_uid: str, sop_instance_uid: str) -> ParsedReport | None:
        if sop_class_uid not in REPORT_SOP_CLASSES:
            return None
        try:
            return parse_report(data)
        except Exception as exc:  # the instance is still archived; only its report text is lost
            log.warning("SR %s: content not readable as a report: %s", sop_instance_uid, exc)
            return None
