"""Hostile DICOM files a peer can send: a deflate bomb, a truncated dataset, an oversized SR tree.

Each is a valid Part 10 file up to the point of the attack, so it passes the association and the
File Meta checks and reaches the dataset parser.
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    ComprehensiveSRStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

CHUNK = 1024 * 1024


def _header(sop_class: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "HOSTILE"
    ds.PatientName = "Hostile^Peer"
    ds.Modality = "MR" if sop_class == MRImageStorage else "SR"
    return ds


def _part10(path: Path, ds: Dataset, syntax: str, body: bytes) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
    out = BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=True)
    path.write_bytes(out.getvalue() + body)
    return path


def _explicit(ds: Dataset) -> bytes:
    """``ds`` encoded in explicit VR little endian (no File Meta)."""
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    write_dataset(buffer, ds)
    return buffer.getvalue()


def deflate_bomb(path: Path, inflated: int = 1536 * CHUNK) -> Path:
    """An MR instance whose deflated dataset holds Pixel Data of ``inflated`` zero bytes (OB): the
    default (1.5 GiB) deflates to about 1.5 MB."""
    ds = _header(MRImageStorage)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [compressor.compress(_explicit(ds) + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OB", 0, inflated))]
    zeros = bytes(CHUNK)
    for _ in range(inflated // CHUNK):
        parts.append(compressor.compress(zeros))
    parts.append(compressor.compress(bytes(inflated % CHUNK)) + compressor.flush())
    return _part10(path, ds, DeflatedExplicitVRLittleEndian, b"".join(parts))


def truncated_pixel_data(path: Path, declared: int = 0xFFFFFFF0, present: int = 1000) -> Path:
    """An MR instance whose Pixel Data (OW) declares ``declared`` bytes and is followed by ``present``."""
    ds = _header(MRImageStorage)
    body = _explicit(ds) + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, declared) + bytes(present)
    return _part10(path, ds, ExplicitVRLittleEndian, body)


def sr_with_items(path: Path, items: int = 100_000) -> Path:
    """A Comprehensive SR whose Findings container holds ``items`` TEXT content items."""
    ds = _header(ComprehensiveSRStorage)
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"

    def code(meaning: str) -> Dataset:
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = "121071", "DCM", meaning
        return c

    texts = []
    for i in range(items):
        item = Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "TEXT"
        item.ConceptNameCodeSequence = [code("Finding")]
        item.TextValue = f"finding number {i}"
        texts.append(item)
    findings = Dataset()
    findings.RelationshipType, findings.ValueType, findings.ContinuityOfContent = "CONTAINS", "CONTAINER", "SEPARATE"
    findings.ConceptNameCodeSequence = [code("Findings")]
    findings.ContentSequence = texts
    ds.ContentSequence = [findings]
    return _part10(path, ds, ExplicitVRLittleEndian, _explicit(ds))
