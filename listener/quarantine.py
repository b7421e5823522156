"""Refused datasets are kept for inspection: the raw bytes plus a reason file, and a SQL row.

Both are best effort: the quarantine must never turn a clean refusal into a crash (the disk may
be the very thing that is full). Every peer-supplied string in the reason file is escaped (one
field per line, whatever the peer sent).
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import QuarantineEntry
from radpair.core.store import atomic_write
from radpair.listener.audit import escape

log = logging.getLogger(__name__)


class Quarantine:
    def __init__(self, root: Path, sessions: sessionmaker[Session]) -> None:
        self.root = Path(root)
        self._sessions = sessions

    def keep(self, data: bytes, reason: str, status: int, calling_ae: str, peer: str,
             sop_instance_uid: str, transfer_syntax: str) -> Path | None:
        """Write ``data`` (the dataset as received, without File Meta: read it with the transfer
        syntax in the reason file) and ``<name>.txt``; return the data file's path."""
        now = dt.datetime.now(dt.timezone.utc)
        name = f"{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}"
        path = self.root / f"{name}.dcm"
        reason, calling_ae, peer = escape(reason), escape(calling_ae), escape(peer)
        sop_instance_uid, transfer_syntax = escape(sop_instance_uid), escape(transfer_syntax)
        note = (f"reason: {reason}\nstatus: 0x{status:04X}\ncalling_ae: {calling_ae}\npeer: {peer}\n"
                f"sop_instance_uid (from the request): {sop_instance_uid}\ntransfer_syntax: {transfer_syntax}\n"
                f"size: {len(data)} bytes\nreceived: {now.isoformat()}\n")
        try:
            atomic_write(path, (data,))
            atomic_write(path.with_suffix(".txt"), (note.encode(),))
        except OSError as exc:
            log.error("quarantine: could not keep %s (%s): %s", sop_instance_uid, reason, exc)
            return None
        try:
            with self._sessions() as session:
                session.add(QuarantineEntry(path=str(path)[:300], reason=reason, status=status,
                                            calling_ae=calling_ae[:16], received_at=now))
                session.commit()
        except Exception as exc:  # the files are there; the row is a convenience
            log.error("quarantine: %s kept but not recorded in SQL: %s", path.name, exc)
        log.warning("quarantined %s from %s: %s (0x%04X)", path.name, calling_ae, reason, status)
        return path
