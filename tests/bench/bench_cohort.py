"""Cohort generation and ``radpair send`` throughput (issue #3), each against a peer in the same run.

- Generation: 40 studies of 64³ with 2 worker processes against 1 (the peer is the same generator
  in one process; the ratio is the parallel speed-up on this machine).
- Sending: the same cohort's files (MR slices + SRs) to DCMTK storescp, by core.scu (one
  association per study, TCP_NODELAY) and by DCMTK storescu (TCP_NODELAY=1, one association for
  everything, ``-R``: only the SOP classes needed).

Run: ``pytest tests/bench/bench_cohort.py -s``. Figures are printed and written to
tests/bench/results/cohort.json.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from radpair.core.scu import Peer, store_files
from tests.support.bench import RESULTS_DIR
from tests.support.cohorts import make_cohort
from tests.support.dcmtk import StoreSCP

N_STUDIES = 40
SIZE = (64, 64, 64)


def _generate(out: Path, workers: int) -> float:
    started = time.perf_counter()
    make_cohort(out, N_STUDIES, 7, size=SIZE, workers=workers)
    return time.perf_counter() - started


def _send(sender: str, files: list[Path], folder: Path) -> float:
    scp = StoreSCP(folder)
    try:
        started = time.perf_counter()
        if sender == "core.scu":
            outcomes = store_files(files, Peer("127.0.0.1", scp.port, scp.aet))
            assert all(o.ok for o in outcomes)
        else:
            subprocess.run(["storescu", "-R", "-aec", scp.aet, "127.0.0.1", str(scp.port), *map(str, files)],
                           check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"}, timeout=600)
        elapsed = time.perf_counter() - started
    finally:
        scp.stop()
    assert len(list(folder.iterdir())) == len(files)
    return elapsed


def test_cohort_generation_and_send(tmp_path: Path) -> None:
    if shutil.which("storescu") is None:
        pytest.skip("DCMTK is not installed: run `make sysdeps`")
    one = _generate(tmp_path / "one", workers=1)
    two = _generate(tmp_path / "two", workers=2)
    files = sorted((tmp_path / "two").rglob("*.dcm"))
    scu = _send("core.scu", files, tmp_path / "rx-scu")
    dcmtk = _send("storescu", files, tmp_path / "rx-dcmtk")
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_1m": os.getloadavg()[0]},
        "generation": {"studies": N_STUDIES, "size": list(SIZE), "seconds_1_worker": round(one, 2),
                       "seconds_2_workers": round(two, 2), "studies_per_s_2_workers": round(N_STUDIES / two, 2),
                       "speedup_2_vs_1": round(one / two, 2), "projected_200_studies_s": round(200 * two / N_STUDIES, 1)},
        "send": {"instances": len(files), "core_scu_s": round(scu, 2), "storescu_s": round(dcmtk, 2),
                 "core_scu_instances_per_s": round(len(files) / scu, 1),
                 "storescu_instances_per_s": round(len(files) / dcmtk, 1), "core_scu_vs_storescu_time": round(scu / dcmtk, 2)},
    }
    print(json.dumps(results, indent=2))
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "cohort.json").write_text(json.dumps(results, indent=2) + "\n")
