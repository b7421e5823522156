"""The audit trail: one Association row and one log line per association.

Counts are kept in memory while the association runs (ingest bumps them) and written once, when
it ends. The row reaches its final state before the peer can see the end: a rejection is written
before the A-ASSOCIATE-RJ goes out, a release when the A-RELEASE-RQ arrives (pynetdicom sends the
A-RELEASE-RP after EVT_ACSE_RECV), an abort or a dropped connection when the connection closes.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

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


class AuditTrail:
    def __init__(self, sessions: sessionmaker[Session], called_ae: str) -> None:
        self._sessions = sessions
        self._called_ae = called_ae
        self._active: dict[PynetdicomAssociation, AssociationStats] = {}
        self._rejected: set[int] = set()
        self._lock = threading.Lock()

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
        if stats.pk is None:
            return
        try:
            with self._sessions() as session:
                session.execute(update(Association).where(Association.id == stats.pk).values(
                    ended_at=utcnow(), stored=stats.stored, duplicates=stats.duplicates,
                    failures=stats.failures, outcome=outcome))
                session.commit()
        except Exception as exc:  # the audit must not break the listener
            log.error("audit: could not close association row %s: %s", stats.pk, exc)

    def _insert(self, stats: AssociationStats, outcome: str, ended: bool = False) -> int | None:
        try:
            with self._sessions() as session:
                row = Association(calling_ae=stats.calling_ae[:16], called_ae=self._called_ae[:16],
                                  peer_address=stats.address[:64], peer_port=stats.port, outcome=outcome,
                                  ended_at=utcnow() if ended else None)
                session.add(row)
                session.commit()
                return row.id
        except Exception as exc:
            log.error("audit: could not record association from %s: %s", stats.calling_ae, exc)
            return None
