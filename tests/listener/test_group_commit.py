"""Group commit with real concurrent senders: four storescu processes at once, on SQLite and on
PostgreSQL; every instance arrives, is indexed exactly once with its file, and a re-send through
other associations is idempotent."""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from radpair.core.models import Association, Instance
from radpair.listener.status import status_tables
from tests.support.dcmtk import DCMTK_ENV, dataset_bytes, require
from tests.support.dicom import make_series
from tests.support.listener import RunningListener

SENDERS = 4


def _send_concurrently(listener: RunningListener, chunks: list[list[Path]]) -> list[str]:
    """One storescu per chunk, all at once; their -v logs (each response's status is there)."""
    procs = [subprocess.Popen([require("storescu"), "-v", "-aet", f"SENDER{i}", "-aec", "RADPAIR", "127.0.0.1",
                               str(listener.port), *map(str, chunk)], env=DCMTK_ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i, chunk in enumerate(chunks)]
    logs = [proc.communicate(timeout=300)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs), logs
    return logs


@pytest.mark.parametrize("processes", [False, True], ids=["in-process", "worker-processes"])
def test_concurrent_senders_are_indexed_exactly_once(start_listener, database_url: str, tmp_path: Path,  # noqa: ANN001
                                                     processes: bool) -> None:
    """In this process (one group committer), and over the worker processes of `radpair serve`
    (two; the senders' associations are spread over both, each with its own committer)."""
    listener = start_listener(database_url, processes=processes, **{"listener.workers": 2})
    # Two series of one study and a series of another study, interleaved across the senders.
    files = [*make_series(tmp_path / "a", 320, rows=16, cols=16, seed=1),
             *make_series(tmp_path / "b", 240, rows=16, cols=16, seed=2),
             *make_series(tmp_path / "c", 240, rows=16, cols=16, seed=3, patient_id="P002", accession="ACC2")]
    logs = _send_concurrently(listener, [files[i::SENDERS] for i in range(SENDERS)])
    assert sum(log.count("Received Store Response (Success)") for log in logs) == len(files)

    with listener.sessions() as s:
        rows = {r.sop_instance_uid: r for r in s.scalars(select(Instance))}
    assert len(rows) == len(files), "indexed exactly once"
    for path in files:
        row = rows[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        assert dataset_bytes(listener.settings.store_dir / row.path) == dataset_bytes(path)
    on_disk = sorted(p.relative_to(listener.settings.store_dir).as_posix()
                     for p in listener.settings.store_dir.rglob("*") if p.is_file())
    assert on_disk == sorted(r.path for r in rows.values()), "no orphan or leftover temporary file"
    if processes:
        assert sorted(w.handed for w in listener.service.workers()) == [2, 2], "each worker got two senders"
    else:
        assert listener.service.ingestor.committer.largest_batch > 1, "concurrent stores shared a commit"

    # The same instances again, each through another association than the first time.
    again = _send_concurrently(listener, [files[(i + 1) % SENDERS::SENDERS] for i in range(SENDERS)])
    assert sum(log.count("Received Store Response (Success)") for log in again) == len(files)
    with listener.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == len(files)
        archive = dict(status_tables(s)[0].rows)  # what `radpair status` shows (it crashed on PostgreSQL)
        assert archive["instances"].startswith(f"{len(files)} (")
        counts = Counter()
        for a in s.scalars(select(Association)):
            counts.update(stored=a.stored, duplicates=a.duplicates, failures=a.failures)
    assert counts == Counter(stored=len(files), duplicates=len(files))
