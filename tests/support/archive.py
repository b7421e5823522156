"""Put DICOM files into an archive (store + rows) the way the listener does, for pipeline tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import Instance, Patient, Report, Series, Study, StudyState, utcnow
from radpair.core.store import InstanceStore


def archive_files(sessions: sessionmaker[Session], store: InstanceStore, paths: list[Path],
                  calling_ae: str = "PACS") -> str:
    """Archive ``paths`` (one study) and return its Study Instance UID."""
    with sessions.begin() as s:
        for path in paths:
            data = path.read_bytes()
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            patient = s.scalar(select(Patient).where(Patient.patient_id == ds.PatientID)) or Patient(
                patient_id=ds.PatientID, name=str(ds.PatientName))
            study = s.scalar(select(Study).where(Study.study_uid == ds.StudyInstanceUID)) or Study(
                study_uid=ds.StudyInstanceUID, patient=patient, accession_number=ds.AccessionNumber,
                description=ds.get("StudyDescription", ""))
            series = s.scalar(select(Series).where(Series.series_uid == ds.SeriesInstanceUID)) or Series(
                series_uid=ds.SeriesInstanceUID, study=study, modality=ds.Modality,
                series_number=ds.get("SeriesNumber"), description=ds.get("SeriesDescription", ""),
                body_part=ds.get("BodyPartExamined", ""))
            s.add(series)
            s.flush()
            relative = store.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            store.write(relative, [data])
            s.add(Instance(sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID, series=series,
                           transfer_syntax_uid=ds.file_meta.TransferSyntaxUID, path=relative, size=len(data),
                           sha256=hashlib.sha256(data).hexdigest(), calling_ae=calling_ae))
            study.state = StudyState.RECEIVING
            study.last_received_at = utcnow()
        return ds.StudyInstanceUID


def add_report(sessions: sessionmaker[Session], study_uid: str, text: str) -> None:
    with sessions.begin() as s:
        study = s.scalar(select(Study).where(Study.study_uid == study_uid))
        s.add(Report(sr_instance_uid=pydicom.uid.generate_uid(), study=study, sr_study_uid=study_uid, text=text))


def mark_stable(sessions: sessionmaker[Session], study_uid: str) -> int:
    """What the listener's stability check does: state stable, generation + 1."""
    with sessions.begin() as s:
        study = s.scalar(select(Study).where(Study.study_uid == study_uid))
        study.state = StudyState.STABLE
        study.stable_at = utcnow()
        study.stable_generation += 1
        return study.stable_generation
