"""The audit trail: one Association row and one log line per association.

Counts are kept in memory while the association runs (ingest bumps them) and written once, when
it ends. The row reaches its final state before the peer can see the end: a rejection is written
before the A-ASSOCIATE-RJ goes out, a release when the A-RELEASE-RQ arrives (pynetdicom sends the
A-RELEASE-RP after EVT_ACSE_RECV), an abort or a dropped connection when the connection closes.

An audit row the database cannot take now (disk full, database down) is not dropped: it is logged
at WARNING with its content, kept in memory, and written with the next audit row that succeeds.

Peer-supplied strings (AE titles, UIDs from requests, text in pydicom's error messages) can carry
control characters; :func:`escape` makes them printable, and :func:`install_log_escaping` (done
when the audit trail is created) applies it to every log message of the process, so a peer cannot
forge or split a log line.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from pynetdicom.association import Association as PynetdicomAssociation
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_RELEASE
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import Association, utcnow

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (source, diagnostic) -> words, for the audit row and the log.
REJECT_REASONS = {
    (0x01, 0x03): "calling AE title not recognised",
    (0x01, 0x07): "called AE title not recognised",
    (0x03, 0x02): "local limit exceeded",
    (0x03, 0x01): "temporary congestion",
}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# Audit rows waiting for the database, at most (beyond, the oldest is logged at ERROR and let go).
PENDING_LIMIT = 100_000


def escape(text: str) -> str:
    """``text`` with control characters (and Unicode line separators) written as escapes."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), f"\\x{ord(m.group()):02x}"
                                            if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"), text)


class _EscapedRecord(logging.LogRecord):
    def getMessage(self) -> str:  # noqa: N802 - logging's name
        return escape(super().getMessage())


def install_log_escaping() -> None:
    """Make every log record's message escape control characters (idempotent, process-wide)."""
    if logging.getLogRecordFactory() is not _escaped_factory:
        global _previous_factory
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_escaped_factory)


_previous_factory = logging.getLogRecordFactory()


def _escaped_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)
    record.__class__ = _EscapedRecord if type(record) is logging.LogRecord else record.__class__
    return record


@dataclass
class AssociationStats:
    calling_ae: str
    address: str
    port: int
    pk: int | None = None
    stored: int = 0
    duplicates: int = 0
    failures: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    # The row's values while its insert waits for the database (updated in place until written).
    pending_row: dict[str, Any] | None = None


class AuditTrail:
    def __init__(self, sessions: sessionmaker[Session], called_ae: str) -> None:
        self._sessions = sessions
        self._called_ae = called_ae
        self._active: dict[PynetdicomAssociation, AssociationStats] = {}
        self._rejected: set[int] = set()
        self._lock = threading.Lock()
        # ("insert", values) or ("update", pk, values): audit writes the database could not take yet.
        self._pending: deque[tuple[Any, ...]] = deque()
        self._pending_lock = threading.Lock()
        install_log_escaping()

    def stats(self, assoc: PynetdicomAssociation) -> AssociationStats:
        """The running counts of an association (created on first use)."""
        with self._lock:
            stats = self._active.get(assoc)
            if stats is None:
                stats = self._active[assoc] = AssociationStats(
                    assoc.requestor.ae_title.strip(), assoc.requestor.address, assoc.requestor.port)
            return stats

    def on_established(self, event: Event) -> None:
        stats = self.stats(event.assoc)
        stats.pk = self._insert(stats, "accepted")

    def rejected(self, assoc: PynetdicomAssociation, calling_ae: str, reason: str) -> None:
        """A refusal radpair makes, recorded before the A-ASSOCIATE-RJ is sent."""
        with self._lock:
            self._rejected.add(id(assoc))
        self._record_rejection(assoc, calling_ae, reason)

    def on_rejected(self, event: Event) -> None:
        """EVT_REJECTED: record a refusal pynetdicom made by itself (radpair's own are recorded already)."""
        assoc = event.assoc
        with self._lock:
            if id(assoc) in self._rejected:
                self._rejected.discard(id(assoc))
                return
        calling = assoc.requestor.primitive.calling_ae_title.strip() if assoc.requestor.primitive else ""
        rj = assoc.acceptor.primitive
        reason = REJECT_REASONS.get((rj.result_source, rj.diagnostic), "rejected") if rj else "rejected"
        self._record_rejection(assoc, calling, reason)

    def _record_rejection(self, assoc: PynetdicomAssociation, calling_ae: str, reason: str) -> None:
        stats = AssociationStats(calling_ae, assoc.requestor.address, assoc.requestor.port)
        log.warning("association %s@%s:%d rejected: %s", calling_ae, stats.address, stats.port, reason)
        self._insert(stats, f"rejected: {reason}", ended=True)

    def on_acse_received(self, event: Event) -> None:
        """EVT_ACSE_RECV: an A-RELEASE-RQ ends the association; record it before the reply goes out."""
        primitive = event.primitive
        if isinstance(primitive, A_RELEASE) and primitive.result is None:
            self._finish(event.assoc, "released")

    def on_closed(self, event: Event) -> None:
        """EVT_CONN_CLOSE: an association that was not released was aborted (or its peer vanished)."""
        self._finish(event.assoc, "released" if event.assoc.is_released else "aborted")

    def _finish(self, assoc: PynetdicomAssociation, outcome: str) -> None:
        """Write the row's final state and log the association's one line (once)."""
        with self._lock:
            stats = self._active.pop(assoc, None)
        if stats is None:  # rejected, closed before it was established, or already finished
            return
        seconds = time.monotonic() - stats.started
        rate = stats.stored / seconds if seconds > 0 else 0.0
        log.info("association %s@%s:%d %s: %d stored, %d duplicates, %d failed, %.1f MB in %.2f s (%.0f/s)",
                 stats.calling_ae, stats.address, stats.port, outcome, stats.stored, stats.duplicates,
                 stats.failures, stats.bytes / 1e6, seconds, rate)
        final = dict(ended_at=utcnow(), stored=stats.stored, duplicates=stats.duplicates,
                     failures=stats.failures, outcome=outcome)
        with self._pending_lock:
            if stats.pending_row is not None:  # its insert still waits: it will be written final
                stats.pending_row.update(final)
                return
        if stats.pk is None:
            return
        try:
            self._flush()
            with self._sessions() as session:
                session.execute(update(Association).where(Association.id == stats.pk).values(**final))
                session.commit()
        except Exception as exc:  # the audit must not break the listener, nor lose the row
            self._defer(("update", stats.pk, final), exc)

    def _insert(self, stats: AssociationStats, outcome: str, ended: bool = False) -> int | None:
        values = dict(calling_ae=stats.calling_ae[:16], called_ae=self._called_ae[:16],
                      peer_address=stats.address[:64], peer_port=stats.port, outcome=outcome[:200],
                      started_at=utcnow(), ended_at=utcnow() if ended else None)
        try:
            self._flush()
            with self._sessions() as session:
                row = Association(**values)
                session.add(row)
                session.commit()
                return row.id
        except Exception as exc:
            stats.pending_row = values
            self._defer(("insert", values), exc)
            return None

    def _defer(self, write: tuple[Any, ...], exc: Exception) -> None:
        """Keep an audit write the database refused; it goes out with the next one that succeeds."""
        log.warning("audit: database unavailable (%s); row kept for later: %s", exc, write[-1])
        with self._pending_lock:
            self._pending.append(write)
            if len(self._pending) > PENDING_LIMIT:
                log.error("audit: more than %d rows waiting; this one is only in the log: %s", PENDING_LIMIT,
                          self._pending.popleft()[-1])

    def pending(self) -> int:
        """Audit writes waiting for the database."""
        return len(self._pending)

    def _flush(self) -> None:
        """Write the kept rows, oldest first, in one transaction (raises, keeping them, if it cannot)."""
        with self._pending_lock:
            if not self._pending:
                return
            writes = list(self._pending)
            inserted: dict[int, Association] = {}
            with self._sessions() as session:
                for write in writes:
                    if write[0] == "insert":
                        inserted[id(write[1])] = row = Association(**write[1])
                        session.add(row)
                    else:
                        session.execute(update(Association).where(Association.id == write[1]).values(**write[2]))
                session.commit()
            for _ in writes:
                self._pending.popleft()
            with self._lock:
                running = list(self._active.values())
            for stats in running:  # an association still open: its final update goes to the row now written
                row = inserted.get(id(stats.pending_row)) if stats.pending_row is not None else None
                if row is not None:
                    stats.pk, stats.pending_row = row.id, None
            log.info("audit: %d kept row(s) written", len(writes))
