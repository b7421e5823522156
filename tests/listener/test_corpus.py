"""Every file in pydicom's test corpus (pydicom/data/test_files + pydicom-data), sent one by one:
each is either stored byte-identical after the meta header, or refused with a failure status and
quarantined; and the listener still answers C-ECHO afterwards.

storescu is the sender, proposing each file's own transfer syntax. Where DCMTK cannot send a
file as it is (a transfer syntax storescu 3.6.7 cannot propose, a file without SOP UIDs) or
re-encodes it on the way (e.g. a meta header that lies about the encoding), pynetdicom sends the
file's exact bytes instead (``send_c_store(path)`` does not decode), so every check is exact.
"""

from __future__ import annotations

import re
from pathlib import Path

import pydicom.data
import pytest
from pydicom import dcmread
from pydicom.uid import UID, MediaStorageDirectoryStorage
from pynetdicom import AE, build_context
from pynetdicom import _config as pynetdicom_config
from sqlalchemy import func, select

from radpair.core.models import Instance, QuarantineEntry
from tests.support.dcmtk import dataset_bytes
from tests.support.listener import RunningListener

_STATUS = re.compile(r"Received Store Response \((\w+)")
# storescu's option to propose (and prefer) each transfer syntax it supports besides the default.
_STORESCU_PROPOSE = {
    "1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.1": "-xe", "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd", "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx", "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.80": "-xt", "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw",
}


def corpus() -> list[Path]:
    """Every file of both corpora that has a DICOM File Meta header (what a PACS would send),
    except DICOMDIRs: media directories, which no SCU sends over the network."""
    root = Path(pydicom.data.__file__).parent / "test_files"
    paths = {Path(p) for p in pydicom.data.get_testdata_files()} | {p for p in root.rglob("*") if p.is_file()}
    part10 = []
    for path in sorted(paths):
        try:
            meta = dcmread(path, stop_before_pixels=True).file_meta
        except Exception:
            continue
        sop_class = meta.get("MediaStorageSOPClassUID")
        if sop_class and sop_class != MediaStorageDirectoryStorage and meta.get("TransferSyntaxUID"):
            part10.append(path)
    return part10


def send_exact(listener: RunningListener, path: Path) -> int:
    """Send the file's bytes unchanged with pynetdicom; return the response status.
    (STORE_SEND_CHUNKED_DATASET: pynetdicom streams the file's dataset bytes instead of
    decoding and re-encoding them.)"""
    meta = dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="PYNETDICOM")
    context = build_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])
    assoc = ae.associate("127.0.0.1", listener.port, [context], ae_title=listener.settings.listener.ae_title)
    assert assoc.is_established, f"{path.name}: association refused"
    try:
        rsp = assoc.send_c_store(path)
    finally:
        assoc.release()
    return int(rsp.Status)


def test_pydicom_corpus(start_listener, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    # "replace": the corpus holds several encodings of one SOP Instance UID; each one sent must
    # then be the archived one (keep_first is covered in test_ingest).
    listener = start_listener(**{"listener.on_changed_duplicate": "replace"})
    files = corpus()
    assert len(files) > 150, "pydicom-data missing? (pip install pydicom-data)"
    outcomes = {"storescu": 0, "pynetdicom": 0, "refused": 0}
    for path in files:
        ts = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        quarantined = _count(listener, QuarantineEntry)
        statuses = []
        if ts in _STORESCU_PROPOSE:
            statuses = _STATUS.findall(listener.storescu(path, extra=(_STORESCU_PROPOSE[ts],)).stderr)
        if statuses and statuses[0] == "Success" and _stored_exactly(listener, path):
            outcomes["storescu"] += 1
            continue
        if statuses and statuses[0] != "Success":
            status = -1
        else:  # storescu could not send it, or re-encoded it: send the exact bytes
            status = send_exact(listener, path)
        if status == 0:
            assert _stored_exactly(listener, path), f"{path.name}: acknowledged, not stored byte-identical"
            outcomes["pynetdicom"] += 1
        else:
            assert status != 0
            assert _count(listener, QuarantineEntry) == quarantined + 1, f"{path.name}: refused, not quarantined"
            outcomes["refused"] += 1
    print(f"\ncorpus of {len(files)} files: {outcomes}")
    assert outcomes["storescu"] > 100 and outcomes["refused"] >= 1
    assert listener.echoscu().returncode == 0


def _stored_exactly(listener: RunningListener, path: Path) -> bool:
    sent = dataset_bytes(path)
    uid = str(dcmread(path, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID)
    with listener.sessions() as s:
        row = s.scalar(select(Instance).where(Instance.sop_instance_uid == UID(uid)))
    return row is not None and dataset_bytes(listener.settings.store_dir / row.path) == sent


def _count(listener: RunningListener, model: type) -> int:
    with listener.sessions() as s:
        return s.scalar(select(func.count(model.id))) or 0
