"""Read the handful of attributes the archive indexes, without decoding the whole dataset."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from radpair.core.uids import InvalidUID, validate_uid

# Only these are converted; pixel data and everything after it are never read.
HEADER_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate", "PatientSex",
    "AccessionNumber", "StudyDate", "StudyTime", "StudyID", "StudyDescription",
    "ReferringPhysicianName", "Modality", "SeriesNumber", "SeriesDescription",
    "BodyPartExamined", "FrameOfReferenceUID", "InstanceNumber",
)


class HeaderError(ValueError):
    """The dataset does not parse, or lacks a UID the archive needs; the message says which."""


@dataclass(frozen=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    patient_id: str = ""
    issuer: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    body_part: str = ""
    frame_of_reference_uid: str = ""
    instance_number: int | None = None


def _text(ds: Dataset, keyword: str, limit: int) -> str:
    """A clean string that fits its SQL column (PostgreSQL enforces lengths and refuses NUL)."""
    try:
        value = ds.get(keyword, "")
    except Exception:  # a malformed value must not sink the instance: index it as empty
        return ""
    return str(value if value is not None else "").replace("\x00", "").strip()[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except Exception:
        return None


def read_header(part10: bytes, transfer_syntax_uid: str) -> InstanceHeader:
    """Parse a DICOM Part 10 byte string just far enough to index it.

    Raises HeaderError when it does not parse or a UID is missing or malformed: such a dataset
    cannot be filed by UID, so it is refused and quarantined.
    """
    try:
        ds = dcmread(BytesIO(part10), stop_before_pixels=True, specific_tags=list(HEADER_KEYWORDS))
        uids = {
            kw: validate_uid(ds.get(kw), kw)
            for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        }
    except InvalidUID as exc:
        raise HeaderError(str(exc)) from exc
    except (InvalidDicomError, ValueError, KeyError, TypeError, EOFError, OSError, NotImplementedError) as exc:
        raise HeaderError(f"dataset does not parse: {type(exc).__name__}: {exc}") from exc
    return InstanceHeader(
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        transfer_syntax_uid=transfer_syntax_uid,
        patient_id=_text(ds, "PatientID", 64),
        issuer=_text(ds, "IssuerOfPatientID", 64),
        patient_name=_text(ds, "PatientName", 324),
        birth_date=_text(ds, "PatientBirthDate", 8),
        sex=_text(ds, "PatientSex", 16),
        accession_number=_text(ds, "AccessionNumber", 64),
        study_date=_text(ds, "StudyDate", 8),
        study_time=_text(ds, "StudyTime", 16),
        study_id=_text(ds, "StudyID", 16),
        study_description=_text(ds, "StudyDescription", 64),
        referring_physician=_text(ds, "ReferringPhysicianName", 324),
        modality=_text(ds, "Modality", 16),
        series_number=_int(ds, "SeriesNumber"),
        series_description=_text(ds, "SeriesDescription", 64),
        body_part=_text(ds, "BodyPartExamined", 16),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID", 64),
        instance_number=_int(ds, "InstanceNumber"),
    )
