"""Durability of `radpair serve` as a real process: SIGKILL it (every process of it: the parent
and its listener workers) while storescu streams a few hundred instances, restart it, and every instance storescu saw acknowledged is on disk (same
bytes) and in SQL. Also: SIGTERM stops it cleanly, and `radpair status` reports the archive."""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from radpair.core.db import make_engine, session_factory
from radpair.core.models import Instance
from tests.support.dcmtk import DCMTK_ENV, dataset_bytes, require, stream_and_act
from tests.support.dicom import make_series
from tests.support.serve import RADPAIR, ServeProcess


@pytest.fixture
def serve() -> Iterator[Callable[[Path], ServeProcess]]:
    started: list[ServeProcess] = []

    def start(data_dir: Path) -> ServeProcess:
        started.append(ServeProcess(data_dir, env={"RADPAIR_LISTENER_STABLE_AGE": "1"}))
        return started[-1]

    yield start
    for served in started:
        served.kill()


def _stream_and_signal(served: ServeProcess, chunks: list[list[Path]], sig: signal.Signals, after: int) -> list[Path]:
    """One storescu per chunk, all at once; ``sig`` to the service after ``after`` acknowledgements
    (SIGKILL: every process of it at once, parent and listener workers)."""
    return stream_and_act(served.port, chunks, after,
                          served.crash if sig == signal.SIGKILL else lambda: served.proc.send_signal(sig))


def _assert_archived(data_dir: Path, acked: list[Path]) -> None:
    engine = make_engine(f"sqlite:///{data_dir / 'radpair.db'}")
    with session_factory(engine)() as s:
        rows = {r.sop_instance_uid: r for r in s.scalars(select(Instance))}
    engine.dispose()
    for path in acked:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert uid in rows, f"acknowledged {path.name} is not in SQL"
        stored = data_dir / "instances" / rows[uid].path
        assert dataset_bytes(stored) == dataset_bytes(path), f"acknowledged {path.name}: bytes differ"
        assert hashlib.sha256(dataset_bytes(stored)).hexdigest() == rows[uid].sha256


def test_sigkill_mid_stream_loses_no_acknowledged_instance(serve: Callable[[Path], ServeProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = make_series(tmp_path / "in", 240)
    served = serve(data_dir)
    acked = _stream_and_signal(served, [files], signal.SIGKILL, after=80)
    served.proc.wait()
    assert 80 <= len(acked) < len(files), f"{len(acked)} acknowledged"
    _assert_archived(data_dir, acked)

    restarted = serve(data_dir)  # must come up on the same data after the crash

    # The sender retries the whole series: duplicates are harmless, the rest is stored.
    retry = subprocess.run([require("storescu"), "-v", "-aec", "RADPAIR", "127.0.0.1", str(restarted.port),
                            *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True, timeout=300)
    assert retry.stderr.count("Received Store Response (Success)") == len(files)

    assert restarted.stop() == 0
    assert "radpair stopped" in restarted.log()
    status = subprocess.run([*RADPAIR, "status", "--data-dir", str(data_dir)], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0, status.stderr
    assert re.search(rf"^instances\s+{len(files)} \(", status.stdout, re.M), status.stdout
    assert re.search(r"^studies (stable|receiving)\s+1$", status.stdout, re.M), status.stdout


def test_sigterm_mid_stream_finishes_in_flight_stores(serve: Callable[[Path], ServeProcess], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    files = make_series(tmp_path / "in", 120)
    served = serve(data_dir)
    acked = _stream_and_signal(served, [files], signal.SIGTERM, after=40)
    assert served.proc.wait(30) == 0, served.log()
    assert len(acked) >= 40
    _assert_archived(data_dir, acked)


def test_sigkill_during_group_commits_loses_no_acknowledged_instance(serve: Callable[[Path], ServeProcess],
                                                                     tmp_path: Path) -> None:
    """Four senders at once, so the committer indexes batches of several instances: the kill
    lands while batches are being staged, collected and committed (where exactly is up to the
    scheduler). Every acknowledged instance survives; after a restart a full re-send completes
    the archive with each instance indexed once and no file without its row."""
    data_dir = tmp_path / "data"
    files = make_series(tmp_path / "in", 320, rows=16, cols=16)
    served = serve(data_dir)
    acked = _stream_and_signal(served, [files[i::4] for i in range(4)], signal.SIGKILL, after=120)
    served.proc.wait()
    assert 120 <= len(acked) < len(files), f"{len(acked)} acknowledged"
    _assert_archived(data_dir, acked)

    restarted = serve(data_dir)
    retry = subprocess.run([require("storescu"), "-v", "-aec", "RADPAIR", "127.0.0.1", str(restarted.port),
                            *map(str, files)], env=DCMTK_ENV, capture_output=True, text=True, timeout=300)
    assert retry.stderr.count("Received Store Response (Success)") == len(files)
    assert restarted.stop() == 0
    _assert_archived(data_dir, files)
    engine = make_engine(f"sqlite:///{data_dir / 'radpair.db'}")
    with session_factory(engine)() as s:
        paths = sorted(s.scalars(select(Instance.path)))
    engine.dispose()
    # A kill can leave a staged temporary file (".tmp-*.part") behind, never a .dcm without its row.
    assert sorted(p.relative_to(data_dir / "instances").as_posix()
                  for p in (data_dir / "instances").rglob("*.dcm")) == paths
