"""The archive's SQL schema (SQLAlchemy 2.0 typed ORM). Alembic migrations in core/migrations
create exactly these tables; change both together (``alembic revision --autogenerate``).

Patient → Study → Series → Instance mirrors the DICOM information model. A Report is the text of
an SR document, paired with the imaging study it describes. Association rows are the audit trail
of every DICOM association the listener served.
"""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import BigInteger, DateTime, Enum, ForeignKey, Index, Integer, String, Text, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UID = String(64)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: DateTime(timezone=True)}


class StudyState(str, enum.Enum):
    RECEIVING = "receiving"
    STABLE = "stable"


class Patient(Base):
    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(primary_key=True)
    # PatientID is only unique within its issuer; keep both.
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")

    studies: Mapped[list[Study]] = relationship(back_populates="patient")

    __table_args__ = (Index("ux_patients_id_issuer", "patient_id", "issuer", unique=True),)


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patients.id"))
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    study_id: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(64), default="")
    referring_physician: Mapped[str] = mapped_column(String(324), default="")
    state: Mapped[StudyState] = mapped_column(
        Enum(StudyState, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=StudyState.RECEIVING,
    )
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    stable_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # Bumped every time the study goes stable again, so later stages can tell a re-send apart.
    stable_generation: Mapped[int] = mapped_column(Integer, default=0)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")
    reports: Mapped[list[Report]] = relationship(back_populates="study")

    # Stability checks read only the receiving studies: O(receiving), not O(archive).
    __table_args__ = (Index("ix_studies_state_last", "state", "last_received_at"),)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, default=None)
    description: Mapped[str] = mapped_column(String(64), default="")
    body_part: Mapped[str] = mapped_column(String(16), default="")
    frame_of_reference_uid: Mapped[str] = mapped_column(String(64), default="")

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    series_pk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, default=None)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    # Relative to the instance store's root, so the store can move.
    path: Mapped[str] = mapped_column(String(300))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    association_pk: Mapped[int | None] = mapped_column(ForeignKey("associations.id"), default=None)

    series: Mapped[Series] = relationship(back_populates="instances")


class Report(Base):
    """A radiology report: the text of an SR document, paired with its imaging study."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    sr_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    # The study the report describes, once known (by Study UID, else Accession + Patient ID).
    study_pk: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), index=True, default=None)
    sr_study_uid: Mapped[str] = mapped_column(UID)
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    text: Mapped[str] = mapped_column(Text)
    # JSON object: section title -> text (e.g. {"Findings": ..., "Impression": ...}).
    sections: Mapped[str] = mapped_column(Text, default="{}")
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    study: Mapped[Study | None] = relationship(back_populates="reports")


class Association(Base):
    """Audit record of one DICOM association served by the listener."""

    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(primary_key=True)
    calling_ae: Mapped[str] = mapped_column(String(16))
    called_ae: Mapped[str] = mapped_column(String(16))
    peer_address: Mapped[str] = mapped_column(String(64))
    peer_port: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    stored: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    # "accepted", "rejected: <reason>", "aborted", "released".
    outcome: Mapped[str] = mapped_column(String(200), default="accepted")


class QuarantineEntry(Base):
    """An incoming dataset radpair refused; its bytes and a reason file are in the quarantine."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[int] = mapped_column(Integer)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow, server_default=func.now())


# --- pipeline: job queue, results, deliveries (owned by pipeline/; migration 0002) -------------


class JobState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    # Routing matched nothing (or the job had nothing to do): the reason is in last_error.
    SKIPPED = "skipped"
    DEAD = "dead"


class Job(Base):
    """One unit of durable work (``inference`` of a study generation, ``delivery`` of a result).

    ``key`` makes enqueueing idempotent (``inference:<study>:<generation>``,
    ``delivery:<sop instance>:<destination>``). A worker owns a running job while its lease is
    current; the scheduler returns jobs with expired leases to the queue.
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[JobState] = mapped_column(
        Enum(JobState, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=JobState.PENDING,
    )
    study_pk: Mapped[int | None] = mapped_column(ForeignKey("studies.id"), index=True, default=None)
    generation: Mapped[int | None] = mapped_column(Integer, default=None)
    # JSON object with what the handler needs (e.g. {"result": 3, "destination": "pacs"}).
    payload: Mapped[str] = mapped_column(Text, default="{}")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Retries while a peer was unreachable: they back off but never dead-letter the job.
    waits: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    lease_owner: Mapped[str | None] = mapped_column(String(100), default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    # Claims read pending jobs by due time: O(due), not O(history).
    __table_args__ = (Index("ix_jobs_state_next", "state", "next_attempt_at"),)


class Result(Base):
    """A DICOM object radpair wrote for a study generation (SR, SEG, PM or SC), in the store."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(primary_key=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    series_uid: Mapped[str] = mapped_column(UID)
    source_series_uid: Mapped[str] = mapped_column(UID)
    # Relative to the instance store's root.
    path: Mapped[str] = mapped_column(String(300))
    model_name: Mapped[str] = mapped_column(String(100))
    model_version: Mapped[str] = mapped_column(String(100))
    predicted_class: Mapped[str] = mapped_column(String(64))
    probability: Mapped[float] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # Set when a later generation of the study produced a newer result.
    superseded_by: Mapped[int | None] = mapped_column(ForeignKey("results.id"), default=None)


class Delivery(Base):
    """The outbox: one row per result per destination, delivered by its ``delivery`` job."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    result_pk: Mapped[int] = mapped_column(ForeignKey("results.id"), index=True)
    job_pk: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    # "pending", "delivered", "failed" (peer refused it; the job retries or dead-letters).
    state: Mapped[str] = mapped_column(String(16), default="pending")
    status: Mapped[int | None] = mapped_column(Integer, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    delivered_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    __table_args__ = (Index("ux_deliveries_result_dest", "result_pk", "destination", unique=True),)


# --- retrain: labels, held-out set, runs, model lineage (owned by retraining; migration 0003) ----


class Label(Base):
    """A class label for a study, imported from a CSV (a cohort's labels.csv, a pathology list).

    A site's list may name a study by Study UID, by Accession Number (+ Patient ID) or both; the
    retraining snapshot matches on whichever is given. Re-importing a key updates its label.
    """

    __tablename__ = "labels"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    accession_number: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    label: Mapped[str] = mapped_column(String(64))
    # Where it came from (the imported file's name), for the audit of a model's training data.
    source: Mapped[str] = mapped_column(String(300), default="")
    imported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ux_labels_key", "study_uid", "accession_number", "patient_id", unique=True),)


class ModelStatus(str, enum.Enum):
    CANDIDATE = "candidate"
    SERVING = "serving"
    REJECTED = "rejected"
    RETIRED = "retired"


class RetrainRun(Base):
    """One retraining attempt (cron or manual), whatever its outcome.

    The row is also the cross-process lock: ``active`` is 1 while the run is in progress and
    NULL afterwards, and its unique index lets only one row hold 1 (an atomic insert on SQLite
    and PostgreSQL alike). A run whose heartbeat is older than the lease is taken over.
    """

    __tablename__ = "retrain_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(100), default="")
    active: Mapped[int | None] = mapped_column(Integer, unique=True, default=1)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    # "running", "promoted", "rejected", "skipped" (too few new pairs), "failed".
    outcome: Mapped[str] = mapped_column(String(16), default="running")
    reason: Mapped[str] = mapped_column(Text, default="")
    snapshot_size: Mapped[int] = mapped_column(Integer, default=0)
    new_pairs: Mapped[int] = mapped_column(Integer, default=0)


class ModelVersion(Base):
    """Lineage of one trained model: its data, configuration, held-out metrics and fate.

    ``version`` is the Triton version number in the model repository; a rejected candidate is
    never exported there and keeps ``version`` NULL (its artifact stays in ``run_dir``).
    """

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int | None] = mapped_column(Integer, default=None)
    # The version that was serving when this one was trained (and that it was gated against).
    parent_pk: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"), default=None)
    retrain_run_pk: Mapped[int | None] = mapped_column(ForeignKey("retrain_runs.id"), index=True, default=None)
    status: Mapped[ModelStatus] = mapped_column(
        Enum(ModelStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]),
        default=ModelStatus.CANDIDATE,
    )
    reason: Mapped[str] = mapped_column(Text, default="")
    # JSON: the resolved training configuration.
    run_config: Mapped[str] = mapped_column(Text, default="{}")
    # JSON: {"studies": [study UIDs], "held_out": [...], "sha256": content hash, "labelled": n}.
    data_snapshot: Mapped[str] = mapped_column(Text, default="{}")
    # JSON: held-out metrics (auc, f1, ...).
    metrics: Mapped[str] = mapped_column(Text, default="{}")
    run_dir: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    retired_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    parent: Mapped[ModelVersion | None] = relationship(remote_side="ModelVersion.id")

    __table_args__ = (Index("ux_model_versions_name_version", "model_name", "version", unique=True),)


class HeldOutStudy(Base):
    """A study in the fixed held-out set: chosen (by patient) at the first run, never trained on."""

    __tablename__ = "held_out_studies"

    id: Mapped[int] = mapped_column(primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("studies.id"), unique=True)
    retrain_run_pk: Mapped[int] = mapped_column(ForeignKey("retrain_runs.id"))
    chosen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
