"""C-ECHO and C-STORE with DCMTK against an in-process listener: bytes, rows, statuses."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, build_context
from pynetdicom.sop_class import Verification
from sqlalchemy import func, select

from radpair.core.models import Association, Instance, Patient, Series, Study
from tests.support.dcmtk import dataset_bytes
from tests.support.listener import RunningListener
from tests.support.dicom import make_series


def test_echo_is_answered(listener: RunningListener) -> None:
    result = listener.echoscu()
    assert result.returncode == 0, result.stderr


def test_store_series_is_byte_identical_and_indexed(listener: RunningListener, tmp_path: Path) -> None:
    sent = make_series(tmp_path / "in", 12, accession="ACC-12")
    result = listener.storescu(*sent)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("Received Store Response (Success)") == 12, result.stderr

    with listener.sessions() as s:
        rows = s.scalars(select(Instance).order_by(Instance.instance_number)).all()
        study = s.scalar(select(Study))
        assert s.scalar(select(func.count(Series.id))) == 1
        assert s.scalar(select(Patient.patient_id)) == "P001"
        assert study is not None and study.accession_number == "ACC-12"
        assert [r.instance_number for r in rows] == list(range(1, 13))
    for path, row in zip(sent, rows):
        stored = listener.settings.store_dir / row.path
        assert dataset_bytes(stored) == dataset_bytes(path)
        assert row.size == stored.stat().st_size
        assert row.calling_ae == "STORESCU" and row.association_pk is not None
        assert dcmread(stored).file_meta.TransferSyntaxUID == row.transfer_syntax_uid


def test_sender_preamble_is_never_kept(listener: RunningListener, tmp_path: Path) -> None:
    """CVE-2019-11687: a polyglot preamble must not reach the archive."""
    (path,) = make_series(tmp_path / "in", 1)
    data = bytearray(path.read_bytes())
    data[:128] = b"MZ" + b"\xcc" * 126
    path.write_bytes(bytes(data))
    assert listener.storescu(path).returncode == 0
    (stored,) = listener.settings.store_dir.rglob("*.dcm")
    assert stored.read_bytes()[:132] == b"\x00" * 128 + b"DICM"


def test_duplicate_send_is_idempotent(listener: RunningListener, tmp_path: Path) -> None:
    sent = make_series(tmp_path / "in", 3)
    listener.storescu(*sent)
    again = listener.storescu(*sent)
    assert again.stderr.count("Received Store Response (Success)") == 3, again.stderr
    with listener.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 3
        audit = s.scalars(select(Association).order_by(Association.id)).all()
    assert [(a.stored, a.duplicates, a.failures, a.outcome) for a in audit] == [
        (3, 0, 0, "released"), (0, 3, 0, "released")]


def _changed_copy(path: Path, out: Path) -> Path:
    ds = dcmread(path)
    ds.SeriesDescription = "changed"
    ds.save_as(out)
    return out


def test_changed_duplicate_keep_first(listener: RunningListener, tmp_path: Path) -> None:
    (path,) = make_series(tmp_path / "in", 1)
    listener.storescu(path)
    changed = _changed_copy(path, tmp_path / "changed.dcm")
    result = listener.storescu(changed)
    assert "Received Store Response (Success)" in result.stderr
    (stored,) = listener.settings.store_dir.rglob("*.dcm")
    assert dataset_bytes(stored) == dataset_bytes(path)
    kept = list(listener.settings.quarantine_dir.glob("*.dcm"))
    assert len(kept) == 1 and kept[0].read_bytes() == dataset_bytes(changed)
    assert "kept the first" in kept[0].with_suffix(".txt").read_text()


def test_changed_duplicate_replace(start_listener, tmp_path: Path) -> None:  # noqa: ANN001
    running = start_listener(**{"listener.on_changed_duplicate": "replace"})
    (path,) = make_series(tmp_path / "in", 1)
    running.storescu(path)
    changed = _changed_copy(path, tmp_path / "changed.dcm")
    assert "Received Store Response (Success)" in running.storescu(changed).stderr
    (stored,) = running.settings.store_dir.rglob("*.dcm")
    assert dataset_bytes(stored) == dataset_bytes(changed)
    with running.sessions() as s:
        (row,) = s.scalars(select(Instance)).all()
    assert row.size == stored.stat().st_size


def test_unknown_calling_ae_is_rejected(start_listener, tmp_path: Path) -> None:  # noqa: ANN001
    running = start_listener(**{"listener.allowed_peers": [{"ae_title": "PACS"}],
                                "listener.accept_any_calling_ae": False})
    refused = running.echoscu(calling="INTRUDER")
    assert refused.returncode != 0
    assert "Calling AE Title Not Recognized" in refused.stderr or "Rejected" in refused.stderr, refused.stderr
    assert running.echoscu(calling="PACS").returncode == 0
    with running.sessions() as s:
        outcomes = s.scalars(select(Association.outcome).order_by(Association.id)).all()
    assert outcomes == ["rejected: calling AE title not recognised", "released"]


def test_allow_list_pins_the_host(start_listener) -> None:  # noqa: ANN001
    running = start_listener(**{"listener.allowed_peers": [{"ae_title": "PACS", "host": "10.9.9.9"}],
                                "listener.accept_any_calling_ae": False})
    assert running.echoscu(calling="PACS").returncode != 0


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_association_limit(start_listener, processes: bool) -> None:  # noqa: ANN001
    """With worker processes the limit holds over all of them (the held association is in one, the
    refused echo is handed to the other)."""
    running = start_listener(processes=processes, **{"listener.max_associations": 1, "listener.workers": 2})
    held = AE(ae_title="HOLDER").associate("127.0.0.1", running.port, [build_context(Verification)],
                                           ae_title="RADPAIR")
    assert held.is_established
    try:
        assert running.echoscu().returncode != 0
    finally:
        held.release()
    assert running.echoscu().returncode == 0
    with running.sessions() as s:
        outcomes = s.scalars(select(Association.outcome).order_by(Association.id)).all()
    assert "rejected: local limit exceeded" in outcomes
