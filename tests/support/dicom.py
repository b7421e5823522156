"""Synthetic DICOM for tests and benchmarks: one series writer (pydicom, real multi-file series with
correct geometry) and radiology reports as Enhanced SR (highdicom).

The synthetic cohort (``radpair cohort``) writes realistic studies; these are for tests that need
a series of a given shape, pixel content or attribute (a localiser, a CT, a shuffled file order).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from highdicom.sr import (
    CodedConcept,
    ContainerContentItem,
    ContentSequence,
    EnhancedSR,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def write_series(
    folder: Path,
    volume: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    modality: str = "MR",
    study_uid: str | None = None,
    patient_id: str = "P001",
    accession: str = "ACC001",
    series_number: int = 1,
    description: str = "",
    study_description: str = "",
    body_part: str = "",
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "OTHER"),
    orientation: Sequence[float] = AXIAL,
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    shuffle: bool = False,
) -> list[Path]:
    """Write ``volume`` [slices, rows, cols] (uint16) as one new series; ``spacing`` is (slice, row,
    col) mm. Paths come back in slice order; with ``shuffle`` the files are written (and named) in a
    random order, as a PACS may send them."""
    folder.mkdir(parents=True, exist_ok=True)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    iop = np.asarray(orientation, float)
    normal = np.cross(iop[:3], iop[3:])
    order = np.random.default_rng(0).permutation(len(volume)) if shuffle else np.arange(len(volume))
    paths: dict[int, Path] = {}
    for k in order:
        k = int(k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", patient_id, "20100101", "F"
        ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = accession, "1", "20260101", "120000"
        ds.ReferringPhysicianName, ds.StudyDescription = "", study_description
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.BodyPartExamined = modality, series_number, description, body_part
        ds.Manufacturer, ds.InstanceNumber = "radpair-tests", k + 1
        ds.ImageType = list(image_type)
        if modality == "MR":
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
            ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 10, 500, 1, 1.5
        ds.SliceThickness, ds.PixelSpacing = float(spacing[0]), [float(spacing[1]), float(spacing[2])]
        ds.ImageOrientationPatient = [float(v) for v in iop]
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin, float) + normal * k * float(spacing[0])]
        ds.PositionReferenceIndicator, ds.PatientPosition = "", "HFS"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.ascontiguousarray(volume[k], dtype=np.uint16).tobytes()
        path = folder / (f"{ds.SOPInstanceUID}.dcm" if shuffle else f"{k:05d}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths[k] = path
    return [paths[k] for k in range(len(volume))]


def random_volume(slices: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, size=(slices, rows, cols), dtype=np.uint16)


def head_with_lesion(slices: int = 12, rows: int = 32, cols: int = 28) -> np.ndarray:
    """A head-like blob with one bright ellipsoid "lesion" off-centre (right of centre, anterior)."""
    z, y, x = np.mgrid[:slices, :rows, :cols]
    head = ((x - cols / 2) / (cols * 0.45)) ** 2 + ((y - rows / 2) / (rows * 0.45)) ** 2 + ((z - slices / 2) / (slices * 0.6)) ** 2 < 1
    lesion = ((x - cols * 0.6) ** 2 + (y - rows * 0.4) ** 2 + ((z - slices * 0.5) * 2) ** 2) < 16
    return (head * 400 + lesion * 600).astype(np.uint16)


def make_series(out: Path, n: int, rows: int = 64, cols: int = 64, modality: str = "MR",
                study_uid: str | None = None, patient_id: str = "P001", accession: str = "ACC001",
                seed: int = 0) -> list[Path]:
    """``n`` instances of random pixels in one new series (what the listener tests send)."""
    return write_series(out, random_volume(n, rows, cols, seed), modality=modality, study_uid=study_uid,
                        patient_id=patient_id, accession=accession)


def read_series(paths: Sequence[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def make_report(out: Path, evidence: list[Path], findings: str, impression: str) -> Path:
    """An Enhanced SR (highdicom) with Findings and Impression sections about ``evidence``: it
    lands in the evidence's study, with its patient and accession number."""
    finding = TextContentItem(name=CodedConcept("121071", "DCM", "Finding"), value=findings,
                              relationship_type=RelationshipTypeValues.CONTAINS)
    section = ContainerContentItem(name=CodedConcept("121070", "DCM", "Findings"),
                                   relationship_type=RelationshipTypeValues.CONTAINS)
    section.ContentSequence = ContentSequence([finding])
    summary = TextContentItem(name=CodedConcept("121073", "DCM", "Impression"), value=impression,
                              relationship_type=RelationshipTypeValues.CONTAINS)
    root = ContainerContentItem(name=CodedConcept("18748-4", "LN", "Diagnostic Imaging Report"))
    root.ContentSequence = ContentSequence([section, summary])
    sr = EnhancedSR(evidence=[pydicom.dcmread(p) for p in evidence], content=root, series_instance_uid=generate_uid(),
                    series_number=99, sop_instance_uid=generate_uid(), instance_number=1,
                    manufacturer="radpair-tests")
    out.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(out)
    return out


def write_head_series(folder: Path, slices: int = 12, rows: int = 32, cols: int = 28, **attributes: object) -> list[Path]:
    """An axial T1 "MR HEAD" series of :func:`head_with_lesion` at 4 x 3 x 3 mm, files shuffled."""
    defaults: dict[str, object] = dict(spacing=(4.0, 3.0, 3.0), description="T1 AX", study_description="MR HEAD",
                                       body_part="BRAIN", series_number=3, origin=(-cols * 1.5, -rows * 1.5, 0.0),
                                       shuffle=True)
    return write_series(folder, head_with_lesion(slices, rows, cols), **{**defaults, **attributes})
