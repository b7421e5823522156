"""The multi-process listener of `radpair serve` (listener.pool): a worker process SIGKILLed while
four storescu senders stream loses nothing it acknowledged, is restarted, and a full re-send then
completes the archive with every instance indexed once and no file without its row."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from pydicom import dcmread
from sqlalchemy import func, select

from radpair.core.models import Instance
from tests.support.checks import wait_for
from tests.support.dcmtk import DCMTK_ENV, dataset_bytes, require, stream_and_act
from tests.support.dicom import make_series
from tests.support.listener import RunningListener


def _assert_archived(listener: RunningListener, files: list[Path]) -> None:
    with listener.sessions() as s:
        rows = {r.sop_instance_uid: r for r in s.scalars(select(Instance))}
    for path in files:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert uid in rows, f"acknowledged {path.name} is not in SQL"
        assert dataset_bytes(listener.settings.store_dir / rows[uid].path) == dataset_bytes(path)


def test_a_killed_worker_loses_nothing_acknowledged_and_is_restarted(start_listener, tmp_path: Path) -> None:  # noqa: ANN001
    listener = start_listener(processes=True, **{"listener.workers": 2})
    files = make_series(tmp_path / "in", 400, rows=16, cols=16)
    victim = _worker(listener, 0)
    acked = stream_and_act(listener.port, [files[i::4] for i in range(4)], after=100,
                           action=lambda: os.kill(victim.process.pid, signal.SIGKILL))
    assert 100 <= len(acked) < len(files), f"{len(acked)} acknowledged: the kill did not cut a sender off"
    _assert_archived(listener, acked)

    # The parent restarts the worker under the same index, and hands connections to it again.
    restarted = wait_for("the killed worker to be restarted",
                         lambda: (w := _worker(listener, 0)) and w.ready and w.process.pid != victim.process.pid and w,
                         timeout=90)
    retry = [subprocess.run([require("storescu"), "-v", "-aec", "RADPAIR", "127.0.0.1", str(listener.port),
                             *map(str, chunk)], env=DCMTK_ENV, capture_output=True, text=True, timeout=300)
             for chunk in (files[:200], files[200:])]
    assert sum(r.stderr.count("Received Store Response (Success)") for r in retry) == len(files)
    assert restarted.handed >= 1, "the restarted worker takes connections"
    _assert_archived(listener, files)
    with listener.sessions() as s:
        assert s.scalar(select(func.count(Instance.id))) == len(files), "indexed exactly once"
        paths = sorted(s.scalars(select(Instance.path)))
    # The kill can leave the victim's staged temporary file (".tmp-*.part"), never a .dcm without its row.
    on_disk = sorted(p.relative_to(listener.settings.store_dir).as_posix()
                     for p in listener.settings.store_dir.rglob("*.dcm"))
    assert on_disk == paths, "no file without its row"


def _worker(listener: RunningListener, index: int):  # noqa: ANN202
    return next((w for w in listener.service.workers() if w.index == index), None)
