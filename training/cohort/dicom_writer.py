"""Writing one synthetic study as DICOM: an MR Image Storage series (one file per slice, pydicom)
and its report as an Enhanced SR (highdicom), plus the lesion mask as NIfTI.

highdicom has no MR image constructor, so the MR datasets are built attribute by attribute with
every Type 1 and Type 2 attribute of the MR Image IOD's modules (Patient, General Study, Patient
Study, General Series, Frame of Reference, General Equipment, General Image, Image Plane, Image
Pixel, MR Image, SOP Common); dciodvfy finds no errors in them (tests/cohort).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage

from radpair.training.cohort.shifts import Shift

# LOINC 18748-4 "Diagnostic imaging report", DCM 121070 "Findings", DCM 121072 "Impressions".
REPORT_TITLE = Code("18748-4", "LN", "Diagnostic imaging report")
SECTION_CODES = {"Findings": (Code("121070", "DCM", "Findings"), Code("121071", "DCM", "Finding")),
                 "Impression": (Code("121072", "DCM", "Impressions"), Code("121073", "DCM", "Impression"))}


@dataclass(frozen=True)
class Geometry:
    """Where the voxel [k, r, c] of a (slices, rows, columns) volume is, in patient LPS mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]  # slice, row (between rows), column (between columns)
    origin: np.ndarray  # position of voxel [0, 0, 0]
    row_dir: np.ndarray  # direction of increasing column index
    col_dir: np.ndarray  # direction of increasing row index
    slice_dir: np.ndarray  # direction of increasing slice index (instance number)

    @classmethod
    def axial(cls, shape: tuple[int, int, int], shift: Shift) -> "Geometry":
        fov_plane, fov_slices = shift.fov_mm
        # Rounded so that DS values (16 characters at most) hold them exactly.
        spacing = (round(fov_slices / shape[0], 6), round(fov_plane / shape[1], 6), round(fov_plane / shape[2], 6))
        row_dir = np.array([1.0, 0.0, 0.0])
        col_dir = np.array([0.0, -1.0 if shift.flip_rows else 1.0, 0.0])
        slice_dir = np.array([0.0, 0.0, -1.0 if shift.descending_slices else 1.0])
        centre = np.zeros(3)
        origin = centre - (row_dir * spacing[2] * (shape[2] - 1) + col_dir * spacing[1] * (shape[1] - 1)
                           + slice_dir * spacing[0] * (shape[0] - 1)) / 2.0
        origin = np.round(origin, 4)
        return cls(shape, spacing, origin, row_dir, col_dir, slice_dir)

    def points(self) -> np.ndarray:
        """Patient coordinates of every voxel, float32 [slices, rows, columns, 3]."""
        k, r, c = (np.arange(n, dtype=np.float32) * s for n, s in zip(self.shape, self.spacing))
        return (self.origin.astype(np.float32)
                + k[:, None, None, None] * self.slice_dir.astype(np.float32)
                + r[None, :, None, None] * self.col_dir.astype(np.float32)
                + c[None, None, :, None] * self.row_dir.astype(np.float32))

    def ras_affine(self) -> np.ndarray:
        """The affine MONAI's PydicomReader gives this series: array axes (column, row, slice),
        LPS flipped to RAS."""
        affine = np.eye(4)
        affine[:3, 0] = self.row_dir * self.spacing[2]
        affine[:3, 1] = self.col_dir * self.spacing[1]
        affine[:3, 2] = self.slice_dir * self.spacing[0]
        affine[:3, 3] = self.origin
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


@dataclass(frozen=True)
class StudyInfo:
    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    age: str
    study_uid: str
    accession: str
    study_id: str
    date: str
    time: str
    referring: str


def _study_dataset(info: StudyInfo) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = info.patient_name
    ds.PatientID = info.patient_id
    ds.PatientBirthDate = info.birth_date
    ds.PatientSex = info.sex
    ds.PatientAge = info.age
    ds.StudyInstanceUID = info.study_uid
    ds.StudyDate = info.date
    ds.StudyTime = info.time
    ds.ReferringPhysicianName = info.referring
    ds.StudyID = info.study_id
    ds.AccessionNumber = info.accession
    ds.StudyDescription = "MRI BRAIN WITHOUT CONTRAST"
    return ds


def write_mr_series(folder: Path, volume: np.ndarray, geometry: Geometry, info: StudyInfo, shift: Shift,
                    series_uid: str, frame_uid: str, instance_uids: list[str]) -> list[Dataset]:
    """Write ``volume`` (uint16, [slices, rows, columns]) as one file per slice; returns the
    datasets without pixel data (the SR's evidence)."""
    folder.mkdir(parents=True, exist_ok=True)
    base = _study_dataset(info)
    base.SOPClassUID = MRImageStorage
    base.Modality = "MR"
    base.SeriesInstanceUID = series_uid
    base.SeriesNumber = 1
    base.SeriesDescription = "AX 3D FLAIR"
    base.SeriesDate, base.SeriesTime = info.date, info.time
    base.BodyPartExamined = "HEAD"
    base.PatientPosition = "HFS"
    base.FrameOfReferenceUID = frame_uid
    base.PositionReferenceIndicator = ""
    base.Manufacturer = shift.manufacturer
    base.ManufacturerModelName = shift.model_name
    base.InstitutionName = "Synthetic Children's Hospital"
    base.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    base.AcquisitionDate, base.ContentDate = info.date, info.date
    base.AcquisitionTime, base.ContentTime = info.time, info.time
    base.ScanningSequence = ["SE", "IR"]
    base.SequenceVariant = ["SK", "SP", "MP"]
    base.ScanOptions = ""
    base.MRAcquisitionType = "3D"
    base.SequenceName = "*spcir3d1"
    base.RepetitionTime = 5000.0
    base.EchoTime = 390.0
    base.InversionTime = 1800.0
    base.EchoTrainLength = 200
    base.NumberOfAverages = 1.0
    base.ImagingFrequency = round(42.577 * shift.field_strength, 4)
    base.ImagedNucleus = "1H"
    base.MagneticFieldStrength = shift.field_strength
    base.FlipAngle = 120.0
    base.ImageOrientationPatient = [float(v) for v in (*geometry.row_dir, *geometry.col_dir)]
    base.PixelSpacing = [geometry.spacing[1], geometry.spacing[2]]
    base.SliceThickness = geometry.spacing[0]
    base.SpacingBetweenSlices = geometry.spacing[0]
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = volume.shape[1], volume.shape[2]
    base.BitsAllocated, base.BitsStored, base.HighBit, base.PixelRepresentation = 16, 12, 11, 0
    base.WindowCenter, base.WindowWidth = int(np.percentile(volume, 99) // 2), int(np.percentile(volume, 99))
    evidence = []
    for k, uid in enumerate(instance_uids):
        ds = Dataset()
        ds.update(base)
        ds.SOPInstanceUID = uid
        ds.InstanceNumber = k + 1
        position = geometry.origin + geometry.slice_dir * geometry.spacing[0] * k
        ds.ImagePositionPatient = [float(f"{v:.10g}") for v in position]
        ds.SliceLocation = round(float(position @ np.cross(geometry.row_dir, geometry.col_dir)), 4)
        ds.PixelData = volume[k].tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        pydicom.dcmwrite(folder / f"{k + 1:04d}.dcm", ds, enforce_file_format=True)
        del ds.PixelData
        evidence.append(ds)
    return evidence


def write_report_sr(path: Path, sections: dict[str, str], evidence: list[Dataset], info: StudyInfo,
                    series_uid: str, instance_uid: str, shift: Shift) -> None:
    """The report as an Enhanced SR in the MR's study: a titled container with one container per
    section (Findings, Impressions), each holding its text — the shape listener.reports reads."""
    root = hd.sr.ContainerContentItem(name=REPORT_TITLE)
    root.ContentSequence = []
    for title, text in sections.items():
        section_code, item_code = SECTION_CODES[title]
        section = hd.sr.ContainerContentItem(name=section_code, relationship_type="CONTAINS")
        section.ContentSequence = [hd.sr.TextContentItem(name=item_code, value=text, relationship_type="CONTAINS")]
        root.ContentSequence.append(section)
    sr = hd.sr.EnhancedSR(
        evidence=evidence,
        content=root,
        series_instance_uid=series_uid,
        series_number=2,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=shift.manufacturer,
        institution_name="Synthetic Children's Hospital",
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name="Radiologist^Synthetic",
        verifying_organization="Synthetic Children's Hospital",
    )
    # highdicom stamps the wall clock; a cohort must be identical for a given seed.
    for keyword in ("ContentDate", "SeriesDate", "InstanceCreationDate"):
        if keyword in sr:
            setattr(sr, keyword, info.date)
    for keyword in ("ContentTime", "SeriesTime", "InstanceCreationTime"):
        if keyword in sr:
            setattr(sr, keyword, info.time)
    for item in sr.get("VerifyingObserverSequence", []):
        item.VerificationDateTime = info.date + info.time
    for item in sr.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = info.date + info.time
    sr.SeriesDescription = "Radiology report"
    path.parent.mkdir(parents=True, exist_ok=True)
    sr.save_as(path, enforce_file_format=True)


def write_mask(path: Path, mask: np.ndarray, geometry: Geometry) -> None:
    """The mask [slices, rows, columns] as NIfTI in MONAI's array order (column, row, slice) with
    the series' RAS affine, gzip'd without a timestamp so a seed gives identical bytes."""
    image = nib.Nifti1Image(np.ascontiguousarray(mask.transpose(2, 1, 0)).astype(np.uint8), geometry.ras_affine())
    image.set_qform(geometry.ras_affine(), code=1)
    image.set_sform(geometry.ras_affine(), code=1)
    path.write_bytes(gzip.compress(image.to_bytes(), mtime=0))
