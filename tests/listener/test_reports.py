"""SR reports become Report rows paired with their imaging study, whichever arrives first;
run against SQLite and a real PostgreSQL (the ``database_url`` fixture)."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from radpair.core.models import Report, Study
from tests.support.listener import RunningListener
from tests.support.dicom import make_report, make_series


def _report(listener: RunningListener) -> tuple[Report, str | None]:
    with listener.sessions() as s:
        (report,) = s.scalars(select(Report)).all()
        study_uid = s.scalar(select(Study.study_uid).where(Study.id == report.study_pk)) if report.study_pk else None
    return report, study_uid


def test_report_after_images(start_listener, database_url: str, tmp_path: Path) -> None:  # noqa: ANN001
    listener = start_listener(database_url)
    images = make_series(tmp_path / "mr", 3, study_uid=(study := generate_uid()))
    sr = make_report(tmp_path / "sr.dcm", images, "A 2 cm lesion in the left frontal lobe.", "Likely glioma.")
    assert listener.storescu(*images).returncode == 0
    assert listener.storescu(sr).returncode == 0
    report, paired = _report(listener)
    assert paired == study
    assert json.loads(report.sections) == {"Findings": "A 2 cm lesion in the left frontal lobe.",
                                           "Impression": "Likely glioma."}
    assert report.text.startswith("Findings:\nA 2 cm lesion")


def test_report_before_images(start_listener, database_url: str, tmp_path: Path) -> None:  # noqa: ANN001
    listener = start_listener(database_url)
    images = make_series(tmp_path / "mr", 2, study_uid=(study := generate_uid()))
    sr = make_report(tmp_path / "sr.dcm", images, "No lesion.", "Normal study.")
    listener.storescu(sr)
    assert _report(listener)[1] is None  # only the SR's own series so far: nothing to pair with
    listener.storescu(*images)
    assert _report(listener)[1] == study


def test_report_in_own_study_pairs_by_accession(start_listener, database_url: str, tmp_path: Path) -> None:  # noqa: ANN001
    """A RIS report filed under its own Study UID pairs by AccessionNumber + PatientID."""
    listener = start_listener(database_url)
    images = make_series(tmp_path / "mr", 2, accession="ACC-77", patient_id="P77")
    elsewhere = make_series(tmp_path / "ris", 1, accession="ACC-77", patient_id="P77")
    other_patient = make_series(tmp_path / "other", 1, accession="ACC-77", patient_id="P78")
    listener.storescu(*other_patient)
    listener.storescu(make_report(tmp_path / "sr.dcm", elsewhere, "Lesion.", "See findings."))
    assert _report(listener)[1] is None
    listener.storescu(*images)
    report, paired = _report(listener)
    assert paired == str(dcm_study(images[0]))
    assert report.sr_study_uid == str(dcm_study(elsewhere[0])) != paired


def dcm_study(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)
