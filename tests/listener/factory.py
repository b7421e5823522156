"""Synthetic DICOM for listener tests and the ingest benchmark: image series (pydicom) and
radiology reports as Enhanced SR (highdicom)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from highdicom.sr import (
    CodedConcept,
    ContainerContentItem,
    ContentSequence,
    EnhancedSR,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid


def make_series(out: Path, n: int, rows: int = 64, cols: int = 64, modality: str = "MR",
                study_uid: str | None = None, patient_id: str = "P001", accession: str = "ACC001",
                seed: int = 0) -> list[Path]:
    """Write ``n`` single-frame instances of one new series; return their paths in order."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    paths = []
    for i in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID = patient_id
        ds.PatientName = "Test^Patient"
        ds.PatientBirthDate = "19800101"
        ds.PatientSex = "F"
        ds.ReferringPhysicianName = ""
        ds.Manufacturer = "radpair-tests"
        ds.AccessionNumber = accession
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.StudyID = "1"
        ds.Modality = modality
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 1.0
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = rng.integers(0, 4096, size=(rows, cols), dtype=np.uint16).tobytes()
        path = out / f"{i:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


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
    sr = EnhancedSR(evidence=[dcmread(p) for p in evidence], content=root, series_instance_uid=generate_uid(),
                    series_number=99, sop_instance_uid=generate_uid(), instance_number=1,
                    manufacturer="radpair-tests")
    out.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(out)
    return out
