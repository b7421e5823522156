"""Refusals: each bad input or failing resource gets its DICOM status, the listener keeps serving,
and permanent refusals are quarantined with a reason file."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import CTImageStorage
from pynetdicom import AE, build_context
from pynetdicom import _config as pynetdicom_config
from sqlalchemy import Connection, create_engine, func, select, text
from sqlalchemy.pool import NullPool

from radpair.core.models import Association, Instance, QuarantineEntry, Report
from tests.support.listener import RunningListener
from tests.support.dcmtk import dataset_bytes
from tests.support.dicom import make_series
from tests.support.hostile import deflate_bomb, sr_with_items, truncated_pixel_data
from tests.support.postgres import PostgresServer


@pytest.fixture
def raw_send(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """pynetdicom as a plain client that streams a file's bytes as they are (no re-encoding),
    under the SOP class / transfer syntax its meta header names: how a broken sender behaves."""
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)

    def send(listener: RunningListener, path: Path) -> int:
        meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
        assoc = AE(ae_title="RAWSEND").associate(
            "127.0.0.1", listener.port, [build_context(meta.MediaStorageSOPClassUID, [meta.TransferSyntaxUID])],
            ae_title="RADPAIR")
        assert assoc.is_established
        try:
            return int(assoc.send_c_store(path).Status)
        finally:
            assoc.release()

    return send


def _quarantine(listener: RunningListener) -> list[QuarantineEntry]:
    with listener.sessions() as s:
        return list(s.scalars(select(QuarantineEntry)).all())


def test_unparseable_dataset_is_refused_and_quarantined(listener: RunningListener, raw_send, tmp_path: Path) -> None:  # noqa: ANN001
    (path,) = make_series(tmp_path / "in", 1)
    data = path.read_bytes()
    # Keep the meta header and the first elements, then cut into an element with a tag of junk.
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(data[:400] + b"\x10\x00\x10\x00PN\xff\xff" + b"garbage")
    assert raw_send(listener, broken) == 0xC000
    (entry,) = _quarantine(listener)
    assert entry.status == 0xC000 and Path(entry.path).is_file()
    note = Path(entry.path).with_suffix(".txt").read_text()
    assert note.startswith("reason: ") and "transfer_syntax: 1.2.840.10008.1.2.1" in note
    assert listener.echoscu().returncode == 0


def test_missing_uid_is_refused(listener: RunningListener, raw_send, tmp_path: Path) -> None:  # noqa: ANN001
    (path,) = make_series(tmp_path / "in", 1)
    ds = dcmread(path)
    del ds.SeriesInstanceUID
    ds.save_as(path)
    assert raw_send(listener, path) == 0xC000
    (entry,) = _quarantine(listener)
    assert "SeriesInstanceUID is missing" in entry.reason


def test_sop_class_mismatch_is_refused(listener: RunningListener, raw_send, tmp_path: Path) -> None:  # noqa: ANN001
    """The meta header (and so the presentation context) says MR; the dataset says CT."""
    (path,) = make_series(tmp_path / "in", 1)
    ds = dcmread(path)
    ds.SOPClassUID = CTImageStorage
    ds.save_as(path)
    assert raw_send(listener, path) == 0xA900
    assert [e.status for e in _quarantine(listener)] == [0xA900]


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs for the instance store (we run as root in CI). Where mounting is not
    permitted the test is skipped, loudly: ENOSPC is then not provoked for real."""
    yield from _mount_tmpfs(tmp_path / "data0" / "instances", "1m")


def _mount_tmpfs(mount: Path, size: str) -> Iterator[Path]:
    mount.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill the disk for real (need root/CAP_SYS_ADMIN): {done.stderr}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_is_out_of_resources(start_listener, tiny_disk: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """No reserve: the disk really fills (ENOSPC while writing)."""
    listener = start_listener(**{"listener.disk_reserve": 0})
    assert listener.settings.store_dir == tiny_disk
    sent = make_series(tmp_path / "in", 200)  # ~1.7 MB: does not fit in 1 MiB
    result = listener.storescu(*sent)
    responses = [line for line in result.stderr.splitlines() if "Received Store Response" in line]
    acked = sum("(Success)" in r for r in responses)
    assert 0 < acked < 200
    # storescu names the A7xx family "Refused: OutOfResources" and stops at the first refusal.
    assert responses[-1].endswith("(Refused: OutOfResources)"), responses[-3:]
    with listener.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == acked
        rows = s.scalars(select(Instance)).all()
    assert all((listener.settings.store_dir / r.path).is_file() for r in rows)
    assert _quarantine(listener) == []  # transient: the sender still has it and retries
    assert listener.echoscu().returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB tmpfs for the instance store (as ``tiny_disk``)."""
    yield from _mount_tmpfs(tmp_path / "data0" / "instances", "8m")


def test_disk_reserve_refuses_at_once_and_recovers(start_listener, small_disk: Path, tmp_path: Path) -> None:  # noqa: ANN001
    """Free space below listener.disk_reserve: 0xA700 before anything is written, C-ECHO still
    answered; once space is freed the same listener accepts again (no restart)."""
    listener = start_listener(**{"listener.disk_reserve": 4 * 1024**2})
    first, second = make_series(tmp_path / "in", 2)
    assert "(Success)" in listener.storescu(first).stderr
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * 5 * 1024**2)  # leaves < 4 MiB free
    refused = listener.storescu(second)
    assert "Received Store Response (Refused: OutOfResources)" in refused.stderr, refused.stderr
    assert [p.name for p in small_disk.rglob("*") if p.is_file() and p != ballast] == [
        p.name for p in small_disk.rglob("*.dcm")], "nothing staged for the refused store"
    assert listener.echoscu().returncode == 0
    ballast.unlink()
    assert "(Success)" in listener.storescu(second).stderr
    with listener.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 2


def test_database_down_is_out_of_resources(start_listener, postgres_server: PostgresServer, tmp_path: Path) -> None:  # noqa: ANN001
    """PostgreSQL refuses connections (connection limit 0, backends terminated): 0xA700, then
    0xA700 at once while it stays down (the listener stops trying at every store), C-ECHO still
    answered, and the instance is accepted once the database is back, without a restart."""
    name = f"radpair_down_{uuid.uuid4().hex[:8]}"
    listener = start_listener(postgres_server.create_database(name), **{"listener.database_retry_interval": 0.5})
    first, second = make_series(tmp_path / "in", 2)
    assert "(Success)" in listener.storescu(first).stderr
    with _admin(postgres_server) as conn:
        conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
    refused = listener.storescu(second)
    assert "Received Store Response (Refused: OutOfResources)" in refused.stderr, refused.stderr
    gate = listener.service.ingestor.gate
    assert gate.database_down
    assert listener.echoscu().returncode == 0
    with _admin(postgres_server) as conn:
        conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
    # A sender retries a refused instance; the first retry after the probe interval gets through.
    for _ in range(60):
        if "(Success)" in listener.storescu(second).stderr:
            break
    assert not gate.database_down
    with listener.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 2


def _admin(server: PostgresServer) -> Connection:
    """A superuser connection to the server's maintenance database."""
    return create_engine(server.url, isolation_level="AUTOCOMMIT", poolclass=NullPool).connect()


def test_deflate_bomb_is_refused_without_inflating_it(start_listener, raw_send, tmp_path: Path) -> None:  # noqa: ANN001
    """64 MiB of zeros deflated to ~64 KB, against a 16 MiB cap: 0xC000, quarantined with the reason."""
    listener = start_listener(**{"listener.max_inflated_size": 16 * 1024**2})
    bomb = deflate_bomb(tmp_path / "bomb.dcm", inflated=64 * 1024**2)
    assert bomb.stat().st_size < 200_000
    assert raw_send(listener, bomb) == 0xC000
    (entry,) = _quarantine(listener)
    assert "inflates to more than 16777216 bytes" in entry.reason
    assert Path(entry.path).stat().st_size == len(dataset_bytes(bomb)), "the bytes as received are kept"
    with listener.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 0
    assert listener.echoscu().returncode == 0


def test_truncated_pixel_data_is_refused(listener: RunningListener, raw_send, tmp_path: Path) -> None:  # noqa: ANN001
    """Pixel Data declaring 4 GB followed by 1000 bytes: was acknowledged and archived; now 0xC000."""
    assert raw_send(listener, truncated_pixel_data(tmp_path / "cut.dcm")) == 0xC000
    (entry,) = _quarantine(listener)
    assert "declares 4294967280 bytes" in entry.reason and "only 1000 follow" in entry.reason
    with listener.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 0


def test_instance_over_the_size_limit_is_refused(start_listener, tmp_path: Path) -> None:  # noqa: ANN001
    listener = start_listener(**{"listener.max_instance_size": 4096})
    small, = make_series(tmp_path / "small", 1, rows=8, cols=8)
    big, = make_series(tmp_path / "big", 1, rows=64, cols=64)
    assert "(Success)" in listener.storescu(small).stderr
    assert "Received Store Response (Error: CannotUnderstand)" in listener.storescu(big).stderr
    (entry,) = _quarantine(listener)
    assert "exceeds listener.max_instance_size (4096)" in entry.reason


def test_sr_beyond_the_report_limits_is_archived_without_its_text(start_listener, tmp_path: Path,  # noqa: ANN001
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    listener = start_listener(**{"listener.report_max_items": 200})
    within, beyond = sr_with_items(tmp_path / "within.dcm", 90), sr_with_items(tmp_path / "beyond.dcm", 150)
    with caplog.at_level("WARNING", logger="radpair.listener.ingest"):
        out = listener.storescu(within, beyond)
    assert out.stderr.count("(Success)") == 2, "both archived"
    with listener.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == 2
        (report,) = s.scalars(select(Report)).all()
    assert report.sr_instance_uid == dcmread(within).SOPInstanceUID and "finding number 89" in report.text
    assert any("more than 200 sequence items" in r.getMessage() for r in caplog.records)


def test_peer_strings_are_escaped_in_quarantine_notes_and_logs(listener: RunningListener, raw_send,  # noqa: ANN001
                                                               tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A request UID carrying a line break cannot add a line to the reason file or the log."""
    (path,) = make_series(tmp_path / "in", 1)
    ds = dcmread(path)
    ds.SOPInstanceUID = "1.2.3\nreason: forged"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    forged = tmp_path / "forged.dcm"
    ds.save_as(forged, enforce_file_format=False)
    with caplog.at_level("WARNING"):
        assert raw_send(listener, forged) == 0xC000
    (entry,) = _quarantine(listener)
    note = Path(entry.path).with_suffix(".txt").read_text()
    assert [line for line in note.splitlines() if line.startswith("reason:")] == [f"reason: {entry.reason}"]
    assert "1.2.3\\nreason: forged" in note
    assert not any("\n" in r.getMessage() for r in caplog.records)


def test_audit_rows_survive_a_database_outage(start_listener, postgres_server: PostgresServer) -> None:  # noqa: ANN001
    """The database refuses connections while an association runs: its audit row is kept and
    written, final, with the next association once the database is back (it was dropped before)."""
    name = f"radpair_audit_{uuid.uuid4().hex[:8]}"
    listener = start_listener(postgres_server.create_database(name))
    assert listener.echoscu().returncode == 0
    with _admin(postgres_server) as conn:
        conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
    assert listener.echoscu(calling="DURING").returncode == 0, "C-ECHO needs no database"
    assert listener.service.audit.pending() == 1
    with _admin(postgres_server) as conn:
        conn.execute(text(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
    assert listener.echoscu(calling="AFTER").returncode == 0
    assert listener.service.audit.pending() == 0
    with listener.sessions() as s:
        rows = [(a.calling_ae, a.outcome, a.ended_at is not None) for a in s.scalars(select(Association).order_by(Association.id))]
    assert rows == [("ECHOSCU", "released", True), ("DURING", "released", True), ("AFTER", "released", True)]
