"""The SQL side of ingest: patient/study/series/instance rows for one received instance.

Each instance is indexed in one short transaction, retried when SQLite is busy or when a
concurrent association created the same study or series first (PostgreSQL unique-key race).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import Instance, Patient, Series, Study, StudyState, utcnow
from radpair.listener.header import InstanceHeader
from radpair.listener.reports import NON_IMAGING_MODALITIES, ParsedReport, pair_waiting_reports, save_report

log = logging.getLogger(__name__)

T = TypeVar("T")
ATTEMPTS = 5


class ArchiveUnavailable(RuntimeError):
    """The database cannot take the row now (down, locked too long): a transient refusal."""


@dataclass(frozen=True)
class StoredInstance:
    pk: int
    sha256: str
    path: str


@dataclass(frozen=True)
class Indexed:
    """What archiving did. "stored": a new instance; "replaced": a changed re-send overwrote
    ``previous``; "duplicate": the same bytes were already archived (nothing written);
    "kept_first": other bytes were already archived and the policy keeps them (nothing written)."""

    outcome: Literal["stored", "replaced", "duplicate", "kept_first"]
    previous: StoredInstance | None = None


class Archive:
    """Indexes instances. One per process; safe to call from every association's thread."""

    def __init__(self, sessions: sessionmaker[Session], replace_changed: bool) -> None:
        self._sessions = sessions
        self.replace_changed = replace_changed
        # Series UID -> (series pk, study pk): rows are never deleted, so after the first
        # instance of a series the rest need no look-ups.
        self._series: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def archive(self, header: InstanceHeader, path: str, size: int, sha256: str, calling_ae: str,
                association_pk: int | None, report: ParsedReport | None, write: Callable[[], None]) -> Indexed:
        """In one transaction: look the SOP Instance UID up, call ``write`` (the fsync'd file
        write) if the instance is new or is to be replaced, insert or update its row, commit.

        One transaction per instance, not a look-up and then an insert: half the round trips.
        On SQLite the write lock is held while the file is written, which only serialises what
        SQLite serialises anyway. An OSError from ``write`` propagates with nothing committed.
        """
        def work(session: Session) -> Indexed:
            previous = self._find(session, header.sop_instance_uid)
            if previous is not None and previous.sha256 == sha256:
                return Indexed("duplicate", previous)
            if previous is not None and not self.replace_changed:
                return Indexed("kept_first", previous)
            write()
            now = utcnow()
            series_pk, study, pending = self._series_of(session, header, now)
            self._touch(session, study, header.study_uid, now)
            values = dict(sop_class_uid=header.sop_class_uid, series_pk=series_pk,
                          instance_number=header.instance_number, transfer_syntax_uid=header.transfer_syntax_uid,
                          path=path, size=size, sha256=sha256, received_at=now, calling_ae=calling_ae[:16],
                          association_pk=association_pk)
            # Core-level statements through the session: one INSERT/UPDATE, no unit-of-work
            # bookkeeping on the hot path.
            if previous is not None:
                session.execute(update(Instance).where(Instance.id == previous.pk).values(**values))
            else:
                session.execute(insert(Instance).values(sop_instance_uid=header.sop_instance_uid, **values))
            if report is not None:
                save_report(session, report, header.sop_instance_uid, header.study_uid,
                            header.accession_number, header.patient_id)
            session.commit()
            if pending:
                with self._lock:
                    self._series[header.series_uid] = (series_pk, study)
            return Indexed("stored" if previous is None else "replaced", previous)

        return self._retrying(work)

    # -- internals -------------------------------------------------------------------------

    @staticmethod
    def _find(session: Session, sop_instance_uid: str) -> StoredInstance | None:
        row = session.execute(
            select(Instance.id, Instance.sha256, Instance.path).where(Instance.sop_instance_uid == sop_instance_uid)
        ).first()
        return StoredInstance(*row) if row else None

    def _series_of(self, session: Session, h: InstanceHeader, now) -> tuple[int, int, bool]:  # noqa: ANN001
        with self._lock:
            cached = self._series.get(h.series_uid)
        if cached:
            return cached[0], cached[1], False
        series = session.scalar(select(Series).where(Series.series_uid == h.series_uid))
        if series is not None:
            return series.id, series.study_pk, True
        study = session.scalar(select(Study).where(Study.study_uid == h.study_uid))
        if study is None:
            patient = session.scalar(
                select(Patient).where(Patient.patient_id == h.patient_id, Patient.issuer == h.issuer)
            )
            if patient is None:
                patient = Patient(patient_id=h.patient_id, issuer=h.issuer, name=h.patient_name,
                                  birth_date=h.birth_date, sex=h.sex)
                session.add(patient)
                session.flush()
            study = Study(study_uid=h.study_uid, patient_pk=patient.id, accession_number=h.accession_number,
                          study_date=h.study_date, study_time=h.study_time, study_id=h.study_id,
                          description=h.study_description, referring_physician=h.referring_physician,
                          state=StudyState.RECEIVING, first_received_at=now, last_received_at=now)
            session.add(study)
            session.flush()
            log.info("study %s: receiving (new)", h.study_uid,
                     extra={"patient_id": h.patient_id, "accession_number": h.accession_number})
        series = Series(series_uid=h.series_uid, study_pk=study.id, modality=h.modality,
                        series_number=h.series_number, description=h.series_description,
                        body_part=h.body_part, frame_of_reference_uid=h.frame_of_reference_uid)
        session.add(series)
        session.flush()
        if h.modality not in NON_IMAGING_MODALITIES:
            paired = pair_waiting_reports(session, study, h.patient_id)
            if paired:
                log.info("study %s: paired %d waiting report(s)", h.study_uid, paired)
        return series.id, study.id, True

    @staticmethod
    def _touch(session: Session, study_pk: int, study_uid: str, now) -> None:  # noqa: ANN001
        """Record the arrival (one UPDATE while the study is receiving, the common case); a
        stable study becomes receiving again until it re-stabilises."""
        touched = session.execute(
            update(Study).where(Study.id == study_pk, Study.state == StudyState.RECEIVING)
            .values(last_received_at=now)
        ).rowcount
        if not touched:
            session.execute(update(Study).where(Study.id == study_pk)
                            .values(state=StudyState.RECEIVING, last_received_at=now))
            log.info("study %s: receiving again (was stable)", study_uid)

    def _retrying(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a fresh session; retry when the database is busy or unreachable, or
        when a concurrent transaction inserted the same study/series/instance first (the retry
        then finds it)."""
        delay = 0.05
        for attempt in range(1, ATTEMPTS + 1):
            with self._sessions() as session:
                try:
                    return work(session)
                except IntegrityError:
                    session.rollback()
                    with self._lock:
                        self._series.clear()
                    if attempt == ATTEMPTS:
                        raise
                except (OperationalError, InterfaceError) as exc:
                    session.rollback()
                    if attempt == ATTEMPTS:
                        raise ArchiveUnavailable(f"database unavailable: {exc.orig or exc}") from exc
                    log.warning("database busy or unreachable (attempt %d/%d): %s", attempt, ATTEMPTS, exc.orig)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")
