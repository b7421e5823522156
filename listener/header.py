"""Read the handful of attributes the archive indexes, without decoding the whole dataset.

Before pydicom sees a byte, :func:`check_structure` walks the dataset's element headers (no
values are decoded or copied) and refuses what would make parsing or any later reader costly or
wrong: an instance larger than ``max_instance_size``; a declared length longer than the bytes
that follow (a truncated dataset, e.g. Pixel Data declaring 4 GB followed by 1000 bytes); more
than ``max_sequence_items`` sequence items or a nesting deeper than ``max_sequence_depth``. A
Deflated Explicit VR dataset is inflated incrementally (``zlib.decompressobj``), first counting
and discarding, so a deflate bomb stops at ``max_inflated_size`` having held one chunk at a time;
pydicom then reads the inflated bytes, never the deflated stream (which it would inflate whole).
Each refusal is a :class:`HeaderError` saying why: the listener answers 0xC000 and quarantines it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from radpair.core.settings import ListenerSettings
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
    """The dataset does not parse, exceeds a limit, or lacks a UID the archive needs; the message says which."""


@dataclass(frozen=True)
class ListenerLimits:
    """Bounds on the work one received instance may cause: the ``[listener]`` settings of the same
    names (their defaults are the settings' own)."""

    max_instance_size: int
    max_inflated_size: int
    max_sequence_depth: int
    max_sequence_items: int
    report_max_items: int
    report_max_depth: int
    report_max_text: int
    report_timeout: float

    @classmethod
    def from_settings(cls, settings: ListenerSettings) -> "ListenerLimits":
        return cls(**{name: getattr(settings, name) for name in cls.__dataclass_fields__})


_limits = ListenerLimits.from_settings(ListenerSettings())


def configure_limits(limits: ListenerLimits) -> None:
    """Set the bounds :func:`read_header` and the report extractor enforce (process-wide)."""
    global _limits
    _limits = limits


def current_limits() -> ListenerLimits:
    return _limits


_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_PIXEL_DATA = 0x7FE00010
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_VRS = frozenset(vr.encode() for vr in (
    "AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US UT UV".split()))
_INFLATE_CHUNK = 1024 * 1024


class _Walker:
    """Element headers only: lengths checked against the bytes left, items counted, depth bounded."""

    def __init__(self, data: bytes | memoryview, little: bool, max_items: int, max_depth: int) -> None:
        self.data = data
        self.order = "<" if little else ">"
        self.max_items = max_items
        self.max_depth = max_depth
        self.items = 0

    def _need(self, pos: int, size: int, end: int, what: str) -> None:
        if size > end - pos:
            raise HeaderError(f"truncated dataset: {what} declares {size} bytes at offset {pos}, "
                              f"only {max(end - pos, 0)} follow")

    def dataset(self, pos: int, end: int, explicit: bool, depth: int, in_item: bool) -> int:
        """Walk elements from ``pos`` to ``end`` (or to the item delimiter when ``in_item``)."""
        o = self.order
        while pos < end:
            self._need(pos, 8, end, "an element header")
            group, element = struct.unpack_from(o + "HH", self.data, pos)
            tag = group << 16 | element
            if tag == _ITEM_END:
                if in_item:
                    return pos + 8
                raise HeaderError(f"item delimiter outside an item at offset {pos}")
            vr = bytes(self.data[pos + 4:pos + 6]) if explicit and group != 0xFFFE else b""
            if vr in _LONG_VRS:
                self._need(pos, 12, end, "an element header")
                (length,), pos = struct.unpack_from(o + "L", self.data, pos + 8), pos + 12
            elif vr:
                (length,), pos = struct.unpack_from(o + "H", self.data, pos + 6), pos + 8
            else:
                (length,), pos = struct.unpack_from(o + "L", self.data, pos + 4), pos + 8
            name = f"element ({group:04X},{element:04X})"
            if length == _UNDEFINED:
                # A sequence, an implicit-VR sequence inside UN, or encapsulated pixel data (fragments).
                pos = self.sequence(pos, end, explicit and vr != b"UN", depth + 1, tag == _PIXEL_DATA, None)
                continue
            self._need(pos, length, end, name)
            if vr == b"SQ":
                self.sequence(pos, end, explicit, depth + 1, False, pos + length)
            pos += length
        if in_item:
            raise HeaderError("truncated dataset: an item of undefined length has no delimiter")
        return pos

    def sequence(self, pos: int, end: int, explicit: bool, depth: int, fragments: bool, stop: int | None) -> int:
        """Walk items until the sequence delimiter (undefined length) or ``stop`` (defined length)."""
        if depth > self.max_depth:
            raise HeaderError(f"sequences nested deeper than {self.max_depth} levels")
        limit = end if stop is None else stop
        while True:
            if stop is not None and pos >= stop:
                return pos
            self._need(pos, 8, limit, "a sequence item header")
            group, element, length = struct.unpack_from(self.order + "HHL", self.data, pos)
            tag, pos = group << 16 | element, pos + 8
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise HeaderError(f"expected a sequence item, found ({group:04X},{element:04X}) at offset {pos - 8}")
            self.items += 1
            if self.items > self.max_items:
                raise HeaderError(f"more than {self.max_items} sequence items")
            if length == _UNDEFINED:
                if fragments:
                    raise HeaderError("a pixel data fragment of undefined length")
                pos = self.dataset(pos, limit, explicit, depth, in_item=True)
                continue
            self._need(pos, length, limit, "a sequence item")
            if not fragments:
                self.dataset(pos, pos + length, explicit, depth, in_item=False)
            pos += length


def walk(body: bytes | memoryview, implicit: bool, little: bool, max_items: int, max_depth: int) -> int:
    """Walk a dataset's element headers (HeaderError past a bound or a length); return its item count."""
    walker = _Walker(body, little, max_items, max_depth)
    walker.dataset(0, len(body), not implicit, 0, in_item=False)
    return walker.items


def _file_meta(part10: bytes) -> tuple[int, str]:
    """Where the dataset starts (after the preamble, "DICM" and the explicit VR LE File Meta
    group) and the Transfer Syntax UID the meta names."""
    if len(part10) < 132 or part10[128:132] != b"DICM":
        raise HeaderError("dataset does not parse: no DICOM File Meta header")
    pos, syntax = 132, ""
    while pos + 12 <= len(part10) and struct.unpack_from("<H", part10, pos)[0] == 0x0002:
        element, vr = struct.unpack_from("<H", part10, pos + 2)[0], part10[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            start = pos + 12
            length = struct.unpack_from("<L", part10, pos + 8)[0]
        else:
            start = pos + 8
            length = struct.unpack_from("<H", part10, pos + 6)[0]
        if element == 0x0010:
            syntax = part10[start:start + length].decode("ascii", "replace").strip("\x00 ")
        pos = start + length
    if pos > len(part10):
        raise HeaderError("truncated dataset: the File Meta group runs past the end")
    return pos, syntax


def inflate_bounded(deflated: bytes | memoryview, limit: int) -> bytes:
    """Inflate a raw deflate stream, refusing (HeaderError) once it would exceed ``limit`` bytes.

    A first pass counts and discards, one chunk at a time, so refusing a bomb costs one chunk of
    memory; only a stream within the limit is inflated again and kept.
    """
    def chunks() -> Iterator[bytes]:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        pending: bytes | memoryview = deflated
        try:
            while pending:
                out = inflater.decompress(pending, _INFLATE_CHUNK)
                pending = inflater.unconsumed_tail
                yield out
                if inflater.eof:
                    return
            yield inflater.flush()
        except zlib.error as exc:
            raise HeaderError(f"dataset does not parse: deflated data is corrupt: {exc}") from exc

    total = 0
    for chunk in chunks():
        total += len(chunk)
        if total > limit:
            raise HeaderError(f"deflated dataset inflates to more than {limit} bytes (listener.max_inflated_size)")
    return b"".join(chunks())


def check_structure(part10: bytes, transfer_syntax_uid: str = "", limits: ListenerLimits | None = None,
                    max_items: int | None = None, max_depth: int | None = None) -> tuple[bytes | memoryview, bool, bool]:
    """Refuse (HeaderError) a Part 10 byte string beyond the limits or whose lengths overrun its bytes.

    The transfer syntax is the one given (the presentation context's), else the File Meta's;
    ``max_items`` / ``max_depth`` replace the limits' sequence bounds (the report extractor's are tighter).
    Returns the dataset's bytes (inflated when deflated, else a view of ``part10``) and its
    encoding (implicit VR, little endian), ready for a reader that never inflates again.
    """
    limits = limits or _limits
    if len(part10) > limits.max_instance_size:
        raise HeaderError(f"instance of {len(part10)} bytes exceeds listener.max_instance_size "
                          f"({limits.max_instance_size})")
    offset, meta_syntax = _file_meta(part10)
    syntax = transfer_syntax_uid or meta_syntax
    body: bytes | memoryview = memoryview(part10)[offset:]
    implicit, little = syntax == ImplicitVRLittleEndian, syntax != ExplicitVRBigEndian
    if syntax == DeflatedExplicitVRLittleEndian:
        body = inflate_bounded(body, limits.max_inflated_size)
    if len(body) >= 6:  # what the first element looks like wins over what the meta says, as in pydicom
        implicit = bytes(body[4:6]) not in _VRS
    walk(body, implicit, little, max_items or limits.max_sequence_items, max_depth or limits.max_sequence_depth)
    return body, implicit, little


def _stop_at_pixels(tag: object, _vr: object, _length: object) -> bool:
    return tag == _PIXEL_DATA


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

    Raises HeaderError when it does not parse, breaks a limit (:func:`check_structure`), or a UID
    is missing or malformed: such a dataset cannot be filed by UID, so it is refused and quarantined.
    """
    body, implicit, little = check_structure(part10, transfer_syntax_uid)
    try:
        ds = read_dataset(BytesIO(body), implicit, little, stop_when=_stop_at_pixels,
                          specific_tags=[Tag(keyword) for keyword in ("SpecificCharacterSet", *HEADER_KEYWORDS)])
        uids = {
            kw: validate_uid(ds.get(kw), kw)
            for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
        }
    except InvalidUID as exc:
        raise HeaderError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - whatever pydicom trips on is the dataset's fault: refuse it
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
