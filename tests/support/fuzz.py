"""The generated hostile corpus: byte-level mutations of real datasets, and the three targets they
drive (the header parser, the report extractor, the full C-STORE handler over a real association).

Seeds are real files: pydicom's own test files (every transfer syntax it ships, deflated ones
included), a synthetic-cohort MR slice and SR report, and SR trees. A case keeps the seed's File
Meta (what a sender's association needs) and mutates the dataset after it: bit flips, random
bytes, a 4-byte field overwritten with an extreme length (0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF...),
inserted or deleted runs, duplicated slices, truncation.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

import pydicom.data
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian, MediaStorageDirectoryStorage
from pynetdicom import AE, build_context
from pynetdicom.association import Association

from radpair.listener.header import HeaderError, _file_meta, read_header
from radpair.listener.reports import parse_report
from tests.support.dicom import make_report, make_series
from tests.support.hostile import sr_with_items

EXTREME_LENGTHS = (0xFFFFFFFF, 0xFFFFFFF0, 0x7FFFFFFF, 0x80000000, 0x00010000, 0, 1, 3)
MAX_SEED_BYTES = 600_000


@dataclass(frozen=True)
class Seed:
    name: str
    part10: bytes
    offset: int  # where the dataset starts (after the File Meta)
    transfer_syntax: str
    sop_class: str


def _seed(path: Path) -> Seed | None:
    data = path.read_bytes()
    if len(data) > MAX_SEED_BYTES:
        return None
    try:
        meta = dcmread(path, stop_before_pixels=True).file_meta
        offset, syntax = _file_meta(data)
    except Exception:
        return None
    sop_class = str(meta.get("MediaStorageSOPClassUID", ""))
    if not sop_class or sop_class == MediaStorageDirectoryStorage or not syntax:
        return None
    return Seed(path.name, data, offset, syntax, sop_class)


def seeds(workdir: Path) -> list[Seed]:
    """pydicom's test files (no download: the files inside the package) plus the cohort's kind of
    MR slice and report, an SR tree of 300 items and the same report deflated."""
    root = Path(pydicom.data.__file__).parent / "test_files"
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    (mr,) = make_series(workdir / "mr", 1, rows=16, cols=16)
    report = make_report(workdir / "sr.dcm", [mr], "Enhancing lesion in the left frontal lobe.", "Likely glioma.")
    deflated = dcmread(report)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    deflated.save_as(workdir / "sr_deflated.dcm", enforce_file_format=True)
    own = [mr, report, workdir / "sr_deflated.dcm", sr_with_items(workdir / "sr_tree.dcm", 300)]
    return [s for s in (_seed(p) for p in [*paths, *own]) if s is not None]


@st.composite
def mutated(draw: st.DrawFn, pool: list[Seed]) -> tuple[Seed, bytes]:
    """A seed and its mutated Part 10 bytes (File Meta untouched)."""
    seed = draw(st.sampled_from(pool))
    body = bytearray(seed.part10[seed.offset:])
    for _ in range(draw(st.integers(1, 6))):
        if not body:
            break
        at = draw(st.integers(0, len(body) - 1))
        kind = draw(st.sampled_from(("flip", "random", "length", "insert", "delete", "duplicate", "truncate")))
        if kind == "flip":
            body[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "random":
            chunk = draw(st.binary(min_size=1, max_size=16))
            body[at:at + len(chunk)] = chunk
        elif kind == "length":
            body[at:at + 4] = draw(st.sampled_from(EXTREME_LENGTHS)).to_bytes(4, draw(st.sampled_from(("little", "big"))))
        elif kind == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del body[at:at + draw(st.integers(1, 256))]
        elif kind == "duplicate":
            body[at:at] = body[at:at + draw(st.integers(1, 512))]
        else:
            del body[at:]
    return seed, seed.part10[:seed.offset] + bytes(body)


def header_outcome(seed: Seed, part10: bytes) -> str:
    """``read_header`` either indexes the case or refuses it with HeaderError; anything else fails."""
    try:
        read_header(part10, seed.transfer_syntax)
    except HeaderError:
        return "header:refused"
    return "header:parsed"


def report_outcome(part10: bytes) -> str:
    """The extractor's result, or the exception the C-STORE handler would log (it archives anyway)."""
    try:
        return "report:text" if parse_report(part10) is not None else "report:none"
    except Exception as exc:  # noqa: BLE001 - what ingest catches; the type is the outcome
        return f"report:{type(exc).__name__}"


def sendable(pool: list[Seed]) -> list[Seed]:
    """The seeds whose (SOP class, transfer syntax) fit in one association's 128 presentation contexts."""
    pairs = sorted({(s.sop_class, s.transfer_syntax) for s in pool})[:128]
    return [s for s in pool if (s.sop_class, s.transfer_syntax) in pairs]


class StoreClient:
    """One association to the listener with a context per seed's (SOP class, transfer syntax);
    re-opened if it ends."""

    def __init__(self, port: int, pool: list[Seed]) -> None:
        self.port = port
        self.contexts = [build_context(sop, [syntax]) for sop, syntax in
                         sorted({(s.sop_class, s.transfer_syntax) for s in sendable(pool)})]
        self.assoc: Association | None = None
        self.reassociations = 0

    def send(self, path: Path) -> int | None:
        if self.assoc is None or not self.assoc.is_established:
            self.reassociations += self.assoc is not None
            self.assoc = AE(ae_title="FUZZER").associate("127.0.0.1", self.port, self.contexts, ae_title="RADPAIR")
            assert self.assoc.is_established, "the listener refused an association"
        response = self.assoc.send_c_store(path)
        return int(response.Status) if "Status" in response else None

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
