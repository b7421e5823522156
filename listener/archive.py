"""The SQL side of ingest: patient/study/series/instance rows for a batch of received instances.

A batch (one instance, or the several that concurrent associations delivered together, see
listener.committer) is indexed in one transaction: one multi-row ``INSERT ... ON CONFLICT DO
NOTHING RETURNING`` answers "new or already archived?" for all of them (the unique constraint on
the SOP Instance UID does the look-up, so a new instance costs no SELECT); only the conflicting
ones are read back to compare their hashes. Their staged files are renamed into place and their
folders fsync'd before the commit, so a committed row always has its file. The transaction is
retried when SQLite is busy or when a concurrent writer created the same study or series first.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import Instance, Patient, Series, Study, StudyState, utcnow
from radpair.core.store import InstanceStore, StagedFile
from radpair.listener.header import InstanceHeader
from radpair.listener.reports import NON_IMAGING_MODALITIES, ParsedReport, pair_waiting_reports, save_report

log = logging.getLogger(__name__)

T = TypeVar("T")
ATTEMPTS = 5
INSTANCES = Instance.__table__


class ArchiveUnavailable(RuntimeError):
    """The database cannot take the rows now (down, locked too long): a transient refusal."""


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


@dataclass
class Received:
    """One verified instance whose bytes are staged (fsync'd) and wait for their row."""

    header: InstanceHeader
    path: str
    size: int
    sha256: str
    calling_ae: str
    association_pk: int | None
    report: ParsedReport | None
    staged: StagedFile


class Archive:
    """Indexes instances. One per process; safe to call from several threads.

    ``touch_interval``: a study's ``last_received_at`` is rewritten at most this often by this
    process (it must be well below ``stable_age``: a study whose committed ``last_received_at`` is
    younger than ``stable_age`` cannot turn stable, so skipping a rewrite never misses the
    stable → receiving transition; the study only turns stable up to ``touch_interval`` earlier).
    """

    def __init__(self, sessions: sessionmaker[Session], store: InstanceStore, replace_changed: bool,
                 touch_interval: float = 0.0) -> None:
        self._sessions = sessions
        self.store = store
        self.replace_changed = replace_changed
        self.touch_interval = dt.timedelta(seconds=touch_interval)
        # Series UID -> (series pk, study pk): rows are never deleted, so after the first
        # instance of a series the rest need no look-ups.
        self._series: dict[str, tuple[int, int]] = {}
        # Study pk -> the last_received_at this process committed for it.
        self._touched: dict[int, dt.datetime] = {}
        self._lock = threading.Lock()

    def index(self, batch: Sequence[Received]) -> list[Indexed]:
        """Index ``batch`` (no two with the same SOP Instance UID) in one transaction; publish the
        staged files of the new and replaced instances before it commits. Raises
        ArchiveUnavailable (database), OSError (a rename or a folder fsync) or IntegrityError,
        with nothing committed; a new instance's published file is then removed again."""
        return self._retrying(lambda session: self._index(session, batch))

    # -- internals -------------------------------------------------------------------------

    def _index(self, session: Session, batch: Sequence[Received]) -> list[Indexed]:
        now = utcnow()
        series: dict[str, tuple[int, int]] = {}
        for item in batch:
            if item.header.series_uid not in series:
                series[item.header.series_uid] = self._series_of(session, item.header, now)
        conn = session.connection()
        rows = [dict(sop_instance_uid=item.header.sop_instance_uid, **self._values(item, series, now))
                for item in batch]
        # executemany with RETURNING: SQLAlchemy sends it as one multi-row INSERT ("insertmanyvalues"),
        # and the statement stays in the compiled cache (a .values(rows) one would be compiled each time).
        inserted = set(conn.execute(
            self._insert(conn).on_conflict_do_nothing(index_elements=["sop_instance_uid"])
            .returning(INSTANCES.c.sop_instance_uid), rows).scalars())
        conflicting = [item.header.sop_instance_uid for item in batch if item.header.sop_instance_uid not in inserted]
        previous = {uid: StoredInstance(pk, sha, path) for uid, pk, sha, path in conn.execute(
            select(INSTANCES.c.sop_instance_uid, INSTANCES.c.id, INSTANCES.c.sha256, INSTANCES.c.path)
            .where(INSTANCES.c.sop_instance_uid.in_(conflicting)))} if conflicting else {}
        outcomes = []
        for item in batch:
            prior = previous.get(item.header.sop_instance_uid)
            if prior is None:
                outcomes.append(Indexed("stored"))
            elif prior.sha256 == item.sha256:
                outcomes.append(Indexed("duplicate", prior))
            elif not self.replace_changed:
                outcomes.append(Indexed("kept_first", prior))
            else:
                conn.execute(update(INSTANCES).where(INSTANCES.c.id == prior.pk)
                             .values(**self._values(item, series, now)))
                outcomes.append(Indexed("replaced", prior))
        written = [item for item, done in zip(batch, outcomes) if done.outcome in ("stored", "replaced")]
        touched = self._touch(conn, {series[item.header.series_uid][1]: item.header.study_uid for item in written}, now)
        for item in written:
            if item.report is not None:
                h = item.header
                save_report(session, item.report, h.sop_instance_uid, h.study_uid, h.accession_number, h.patient_id)
        session.flush()  # the reports' rows: whatever they raise is raised before a file is published
        self._commit(session, written, [item for item, done in zip(batch, outcomes) if done.outcome == "stored"])
        with self._lock:
            self._series.update(series)
            self._touched.update(dict.fromkeys(touched, now))
        return outcomes

    def _commit(self, session: Session, written: Sequence[Received], new: Sequence[Received]) -> None:
        """Publish the files, fsync their folders once each, commit. A failure from here on is not
        retried here: the new instances' files go back to their temporary names (so the batch or
        its members can be indexed again); a replaced file cannot be restored (its row keeps the
        old hash until a retry or a re-send). An OSError propagates as such."""
        try:
            for item in written:
                item.staged.publish()
            self.store.sync_folders(item.staged.path.parent for item in written)
            session.commit()
        except BaseException as exc:
            for item in new:
                try:
                    item.staged.unpublish()
                except OSError as undo:  # the file stays without a row: an orphan, never a loss
                    log.error("instance %s: could not withdraw its file: %s", item.header.sop_instance_uid, undo)
            if isinstance(exc, DBAPIError):
                raise ArchiveUnavailable(f"database unavailable at commit: {exc.orig or exc}") from exc
            raise

    @staticmethod
    def _insert(conn: Connection):  # noqa: ANN205 - the dialect's Insert
        return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(INSTANCES)

    @staticmethod
    def _values(item: Received, series: dict[str, tuple[int, int]], now: dt.datetime) -> dict[str, object]:
        h = item.header
        return dict(sop_class_uid=h.sop_class_uid, series_pk=series[h.series_uid][0],
                    instance_number=h.instance_number, transfer_syntax_uid=h.transfer_syntax_uid,
                    path=item.path, size=item.size, sha256=item.sha256, received_at=now,
                    calling_ae=item.calling_ae[:16], association_pk=item.association_pk)

    def _series_of(self, session: Session, h: InstanceHeader, now: dt.datetime) -> tuple[int, int]:
        with self._lock:
            cached = self._series.get(h.series_uid)
        if cached:
            return cached
        series = session.scalar(select(Series).where(Series.series_uid == h.series_uid))
        if series is not None:
            return series.id, series.study_pk
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
        return series.id, study.id

    def _touch(self, conn: Connection, studies: dict[int, str], now: dt.datetime) -> list[int]:
        """Record the arrivals: one UPDATE per study of the batch while it is receiving (the
        common case), none if this process wrote it less than ``touch_interval`` ago; a stable
        study becomes receiving again until it re-stabilises. Returns the studies written."""
        with self._lock:
            due = [pk for pk in studies if now - self._touched.get(pk, dt.datetime.min.replace(tzinfo=dt.timezone.utc))
                   >= self.touch_interval]
        for pk in due:
            touched = conn.execute(
                update(Study).where(Study.id == pk, Study.state == StudyState.RECEIVING).values(last_received_at=now)
            ).rowcount
            if not touched:
                conn.execute(update(Study).where(Study.id == pk).values(state=StudyState.RECEIVING, last_received_at=now))
                log.info("study %s: receiving again (was stable)", studies[pk])
        return due

    def _retrying(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a fresh session; retry when the database is busy or unreachable, or
        when a concurrent transaction inserted the same study/series first (the retry then
        finds it)."""
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
