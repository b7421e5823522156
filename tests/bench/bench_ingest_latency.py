"""C-STORE response time while radpair analyses studies (issue 15: p99 < 100 ms for small instances).

`radpair serve` as a site runs it (embedded tritonserver on CPU serving the shipped model, the
pipeline, the default listener worker processes). One association of a pynetdicom SCU sends
64×64 MR instances one at a time and times each C-STORE from request to response:

1. while radpair is idle (nothing else running: its own baseline);
2. while the pipeline analyses a cohort sent just before (only the C-STOREs answered while at
   least one analysis job was running count);
3. into Orthanc, idle (the peer, same instances).

Prints p50 / p95 / p99 / max per phase, the ratios to the idle baseline, and writes
tests/bench/results/ingest_latency.json. Run: ``pytest tests/bench/bench_ingest_latency.py -s``
(about 5 minutes on 2 cores; the embedded Triton uses its fixed default ports).
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pynetdicom import AE
from sqlalchemy import func, select

from radpair.core.db import make_engine, session_factory
from radpair.core.models import Job, JobState
from tests.bench.bench_ingest import orthanc
from tests.support.bench import RESULTS_DIR
from tests.support.dicom import make_series
from tests.support.serve import ServeProcess

INSTANCES = 600  # per phase at most
COHORT = 40


def _timed_stores(port: int, aet: str, files: list[Path], keep_going=lambda: True) -> list[float]:  # noqa: ANN001
    """Milliseconds per C-STORE over one association, while ``keep_going()`` (checked per instance)."""
    datasets = [dcmread(f) for f in files]
    ae = AE(ae_title="LATENCY")
    for ds in datasets[:1]:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    assert assoc.is_established, f"no association with {aet}"
    # As storescu with TCP_NODELAY=1: without it every request waits for a delayed ACK (~40 ms).
    assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    try:
        for ds in datasets:
            if not keep_going():
                break
            start = time.perf_counter()
            status = assoc.send_c_store(ds)
            times.append((time.perf_counter() - start) * 1000)
            assert status.Status == 0x0000, f"C-STORE answered 0x{status.Status:04X}"
    finally:
        assoc.release()
    return times


def _summary(times: list[float]) -> dict[str, float]:
    a = np.asarray(times)
    return {"n": len(a), "p50_ms": round(float(np.percentile(a, 50)), 1), "p95_ms": round(float(np.percentile(a, 95)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


@pytest.mark.timeout(1800)
def test_store_latency_while_inferring(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    subprocess.run([sys.executable, "-m", "radpair", "cohort", "--out", str(cohort), "--n", str(COHORT),
                    "--seed", "31"], check=True, capture_output=True, timeout=600)
    idle_files = make_series(tmp_path / "idle", INSTANCES, rows=64, cols=64, seed=41)
    busy_files = make_series(tmp_path / "busy", INSTANCES, rows=64, cols=64, seed=42)
    peer_files = make_series(tmp_path / "peer", INSTANCES, rows=64, cols=64, seed=43)

    served = ServeProcess(tmp_path / "radpair", timeout=600, env={
        "RADPAIR_TRITON_MODE": "embedded", "RADPAIR_LISTENER_STABLE_AGE": "1",
        "RADPAIR_LISTENER_STABILITY_CHECK_INTERVAL": "0.25", "RADPAIR_PIPELINE_POLL_INTERVAL": "0.25"})
    engine = make_engine(f"sqlite:///{(tmp_path / 'radpair' / 'radpair.db').resolve()}")
    sessions = session_factory(engine)

    def jobs(state: JobState) -> int:
        with sessions() as s:
            return int(s.scalar(select(func.count(Job.id)).where(Job.state == state)) or 0)

    try:
        deadline = time.monotonic() + 600
        while "tritonserver started" not in served.log() and time.monotonic() < deadline:
            time.sleep(1)
        assert "tritonserver started" in served.log(), served.log()
        idle = _timed_stores(served.port, "RADPAIR", idle_files)

        sender = subprocess.Popen([sys.executable, "-m", "radpair", "send", str(cohort), "--to",
                                   f"127.0.0.1:{served.port}", "--ae-title", "RADPAIR"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sender.wait(600)
        deadline = time.monotonic() + 300
        while jobs(JobState.RUNNING) + jobs(JobState.DONE) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        busy_marks: list[bool] = []

        def running() -> bool:
            busy_marks.append(jobs(JobState.RUNNING) > 0)
            return busy_marks[-1] or jobs(JobState.PENDING) > 0

        busy_all = _timed_stores(served.port, "RADPAIR", busy_files, keep_going=running)
        busy = [t for t, marked in zip(busy_all, busy_marks) if marked]
        done = jobs(JobState.DONE)
    finally:
        served.stop(timeout=120)
        engine.dispose()
    assert busy, f"no C-STORE was answered while an analysis job ran ({done} jobs done):\n{served.log()[-3000:]}"

    work = tmp_path / "orthanc"
    work.mkdir()
    with orthanc(work) as port:
        peer = _timed_stores(port, "ORTHANC", peer_files)

    results = {"radpair idle": _summary(idle), "radpair while inferring": _summary(busy), "orthanc idle": _summary(peer)}
    print(f"\nC-STORE response time, 64x64 MR, one association ({os.cpu_count()} CPUs; {done} analysis jobs done "
          f"during the run, {len(busy)} C-STOREs answered while one ran)")
    print(f"{'phase':<26} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99 / idle':>11}")
    for name, r in results.items():
        print(f"{name:<26} {r['n']:>5} {r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['max_ms']:>8.1f} "
              f"{r['p99_ms'] / results['radpair idle']['p99_ms']:>11.2f}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / "ingest_latency.json"
    out.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "analysis_jobs_done": done, "results": results}, indent=2))
    print(f"written to {out}")
