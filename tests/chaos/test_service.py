"""Chaos inside `radpair serve` as a real process with its embedded Triton (the shipped model):
SIGKILL of the service while a result is being delivered, and SIGKILL of tritonserver in the
middle of the analyses. Counted: results delivered (and re-sent), analyses per study, and every
process the killed service had started (tritonserver, its Python backend stubs, the watchdog)."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

from sqlalchemy import func, select

from radpair.core.db import make_engine, session_factory
from radpair.core.models import Job, JobState, Result, Study
from radpair.serving.server import group_members
from tests.support.checks import wait_for
from tests.support.dcmtk import storescu
from tests.support.dicom import write_head_series
from tests.support.ports import free_port
from tests.support.scp import ControlledSCP
from tests.support.serve import ServeProcess


def _serve(data_dir: Path, scp: ControlledSCP) -> ServeProcess:
    return ServeProcess(data_dir, timeout=120, env={
        "RADPAIR_TRITON_MODE": "embedded", "RADPAIR_TRITON_HTTP_PORT": str(free_port()),
        "RADPAIR_TRITON_GRPC_PORT": str(free_port()), "RADPAIR_TRITON_METRICS_PORT": str(free_port()),
        "RADPAIR_LISTENER_STABLE_AGE": "1", "RADPAIR_LISTENER_STABILITY_CHECK_INTERVAL": "0.25",
        "RADPAIR_PIPELINE_POLL_INTERVAL": "0.25", "RADPAIR_PIPELINE_BACKOFF_MAX": "1",
        "RADPAIR_PIPELINE_LEASE_SECONDS": "20", "RADPAIR_PIPELINE_HEARTBEAT_INTERVAL": "5",
        "RADPAIR_PIPELINE_DESTINATIONS": f'[{{name = "pacs", ae_title = "PACS", host = "127.0.0.1", port = {scp.port}}}]',
        "RADPAIR_PIPELINE_RULES": '[{name = "all", destinations = ["pacs"]}]',
    })


def _descendants(pid: int) -> set[int]:
    """Every live process whose parent chain leads to ``pid``."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _survivors(pids: set[int]) -> list[str]:
    """The command lines of those of ``pids`` still alive, and where their threads wait (what a failed wait names)."""
    lines = []
    for pid in sorted(_alive(pids)):
        try:
            threads = [f"{t.name}:{(t / 'wchan').read_text()}" for t in Path(f"/proc/{pid}/task").iterdir()]
            lines.append(f"{pid}: " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
                         + f" (threads waiting in {', '.join(threads)})")
        except OSError:
            pass
    return lines


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
                alive.add(pid)
        except OSError:
            pass
    return alive


class Archive:
    def __init__(self, data_dir: Path) -> None:
        self.engine = make_engine(f"sqlite:///{(data_dir / 'radpair.db').resolve()}")
        self.sessions = session_factory(self.engine)

    def jobs(self, kind: str) -> dict[JobState, int]:
        with self.sessions() as s:
            return dict(s.execute(select(Job.state, func.count()).where(Job.kind == kind).group_by(Job.state)).all())

    def results(self) -> list[str]:
        with self.sessions() as s:
            return sorted(s.scalars(select(Result.sop_instance_uid)))

    def srs_per_study(self) -> dict[str, int]:
        with self.sessions() as s:
            return dict(s.execute(select(Study.study_uid, func.count(Result.id)).join(Result, Result.study_pk == Study.id)
                                  .where(Result.kind == "sr").group_by(Study.study_uid)).all())


def test_sigkill_during_delivery_delivers_once_after_restart_and_leaves_no_process(tmp_path: Path) -> None:
    scp = ControlledSCP(tmp_path / "scp").start()
    scp.delay(30)  # the first C-STORE is held: the service is killed while it is in flight
    data_dir = tmp_path / "data"
    archive = Archive(data_dir)
    serve = _serve(data_dir, scp)
    try:
        storescu(write_head_series(tmp_path / "mr"), serve.port, "RADPAIR")
        wait_for("a result's C-STORE in flight", scp.in_flight, timeout=180)
        pgid = int((data_dir / "triton" / "tritonserver.pgid").read_text())
        started = _descendants(serve.proc.pid)
        stubs = [p for p in group_members(pgid) if p != pgid]
        assert pgid in started and stubs, "tritonserver and its Python backend stub are running"
        serve.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        serve.proc.wait()
        try:
            wait_for("every process of the killed service to end", lambda: not _alive(started), timeout=60)
        except AssertionError as exc:
            tail = "".join(serve.log().splitlines(keepends=True)[-20:])
            raise AssertionError(f"{exc}; still running: {_survivors(started)}; the service's last lines:\n{tail}") from None
    finally:
        serve.kill()
    scp.delay(None)
    restarted = _serve(data_dir, scp)
    try:
        wait_for("every result delivered", lambda: archive.jobs("delivery") == {JobState.DONE: 3}, timeout=180)
        outage = time.monotonic() - killed
    finally:
        restarted.stop()
        scp.stop()
    results = archive.results()
    stored = scp.stored()
    assert sorted(set(stored)) == results, "each result stored by the PACS"
    resent = len(stored) - len(results)
    assert resent <= 1, "only the one in flight at the kill may arrive twice (same SOP Instance UID)"
    print(f"SIGKILL during delivery: {len(started)} processes ended with it; {len(results)} results delivered, "
          f"{resent} re-sent, {outage:.1f} s from the kill to the last delivery (restart included)")
    archive.engine.dispose()


def test_triton_killed_mid_batch_analyses_every_study_once(tmp_path: Path) -> None:
    scp = ControlledSCP(tmp_path / "scp").start()
    data_dir = tmp_path / "data"
    archive = Archive(data_dir)
    serve = _serve(data_dir, scp)
    try:
        studies = [write_head_series(tmp_path / f"mr{i}") for i in range(3)]
        for files in studies:
            storescu(files, serve.port, "RADPAIR")
        wait_for("an analysis running", lambda: archive.jobs("inference").get(JobState.RUNNING), timeout=180, every=0.05)
        pgid = int((data_dir / "triton" / "tritonserver.pgid").read_text())
        group = set(group_members(pgid))
        os.kill(pgid, signal.SIGKILL)  # the server only: its stub and radpair's client see it vanish
        killed = time.monotonic()
        wait_for("every study analysed", lambda: archive.jobs("inference") == {JobState.DONE: 3}, timeout=300)
        outage = time.monotonic() - killed
        wait_for("the killed server's processes to end", lambda: not _alive(group), timeout=30)
        assert re.search(r"tritonserver restarted", serve.log()), serve.log()
        wait_for("every result delivered", lambda: set(archive.jobs("delivery")) == {JobState.DONE}, timeout=60)
    finally:
        serve.stop()
        scp.stop()
    per_study = archive.srs_per_study()
    assert len(per_study) == 3 and set(per_study.values()) == {1}, per_study
    assert sorted(set(scp.stored())) == archive.results() and len(scp.stored()) == len(archive.results())
    with archive.sessions() as s:
        waits = s.scalar(select(func.sum(Job.waits)).where(Job.kind == "inference"))
    print(f"tritonserver SIGKILLed mid-batch: 3 studies analysed once each ({json.dumps(per_study)}), "
          f"{waits} waits, {outage:.1f} s from the kill to the last analysis")
    archive.engine.dispose()
