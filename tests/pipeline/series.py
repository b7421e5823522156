"""A small synthetic MR series written with pydicom: real multi-file DICOM with correct geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def write_mr_series(folder: Path, slices: int = 12, rows: int = 32, cols: int = 28, spacing: float = 4.0,
                    study_uid: str | None = None, patient_id: str = "PAT-1", accession: str = "ACC-1",
                    shuffle: bool = True) -> list[Path]:
    """Axial slices of a bright ellipsoid "lesion" in a head-like blob; files in shuffled order."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    z, y, x = np.mgrid[:slices, :rows, :cols]
    head = ((x - cols / 2) / (cols * 0.45)) ** 2 + ((y - rows / 2) / (rows * 0.45)) ** 2 + ((z - slices / 2) / (slices * 0.6)) ** 2 < 1
    lesion = ((x - cols * 0.6) ** 2 + (y - rows * 0.4) ** 2 + ((z - slices * 0.5) * 2) ** 2) < 16
    volume = (head * 400 + lesion * 600).astype(np.uint16)
    order = np.random.default_rng(0).permutation(slices) if shuffle else np.arange(slices)
    paths = []
    for k in order:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Patient", patient_id, "20100101", "F"
        ds.AccessionNumber, ds.StudyID, ds.StudyDate, ds.StudyTime = accession, "1", "20260101", "120000"
        ds.ReferringPhysicianName, ds.StudyDescription = "", "MR HEAD"
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.BodyPartExamined = "MR", 3, "T1 AX", "BRAIN"
        ds.Manufacturer, ds.InstanceNumber = "synthetic", int(k) + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "SE", "NONE", "", "2D"
        ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = 10, 500, 1, 1.5
        ds.SliceThickness, ds.PixelSpacing = spacing, [1.0 * 3, 1.0 * 3]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-cols * 1.5, -rows * 1.5, float(k) * spacing]
        ds.SliceLocation = float(k) * spacing
        ds.PositionReferenceIndicator, ds.PatientPosition = "", "HFS"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = volume[k].tobytes()
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_series(paths: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]
