"""End-to-end latency and throughput (issue #6): PACS → radpair → Triton → SR/SEG/PM → PACS.

The real system: Orthanc with the deploy/orthanc Lua auto-routing, `radpair serve` (listener,
pipeline workers) with the real tritonserver serving the default classifier architecture at 64³,
synthetic 64³ cohort studies pushed into Orthanc with storescu.

Per study (sent one at a time, nothing else in flight): latency from the last instance
acknowledged by Orthanc (storescu returned) to the last result acknowledged by Orthanc (radpair's
delivery rows), p50/p95, with the two stability waits (Orthanc's StableAge before it routes,
radpair's stable_age before it analyses) measured and reported separately, and the time in each
stage. Then a burst of studies sent back to back (several in flight): studies per minute.

Peers in the same run: the plain C-STORE of the same study into Orthanc (what the PACS already
does), and the classifier run in-process with torch on the same volume (what Triton adds).
Run: ``pytest tests/bench/bench_e2e.py -s``; ``E2E_BENCH_STUDIES`` (default 20) and
``E2E_BENCH_BURST`` (default 10) set the counts (not ``RADPAIR_*``: radpair reads those as settings).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sqlalchemy import select

from radpair.core.db import make_engine, session_factory
from radpair.core.models import Delivery, Job, Study
from radpair.core.preprocess import PreprocessParams, build_transforms
from radpair.core.task import load_task
from radpair.serving.server import TRITON_DIR, ManagedTritonServer
from tests.support.bench import RESULTS_DIR
from tests.support.cohorts import make_cohort
from tests.support.serve import ServeProcess
from tests.support.orthanc import ORTHANC, Orthanc
from tests.support.ports import free_port
from radpair.training.cohort import read_cohort
from radpair.training.export import export_model
from radpair.training.models import build_classifier

STUDIES = int(os.environ.get("E2E_BENCH_STUDIES", "20"))
BURST = int(os.environ.get("E2E_BENCH_BURST", "10"))
ORTHANC_STABLE_AGE = 1
RADPAIR_STABLE_AGE = 1.0
MODEL = "radpair_classifier"
STAGES = ("load", "preprocess", "triton", "invert", "build", "write")
_TIMINGS = re.compile(r"study (\S+) gen \d+: .*?; ((?:\w+=[\d.]+s ?)+)$")

pytestmark = pytest.mark.skipif(ORTHANC is None or not (TRITON_DIR / "bin" / "tritonserver").is_file(),
                                reason="needs Orthanc (make sysdeps) and tritonserver (nvidia-pytriton)")


def _epoch(value: dt.datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()


def _storescu(files: list[Path], port: int) -> None:
    subprocess.run(["storescu", "-aec", "PACS", "-aet", "MODALITY", "127.0.0.1", str(port), *map(str, files)],
                   check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"}, timeout=120)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


class System:
    def __init__(self, tmp: Path) -> None:
        self.repo = tmp / "triton_models"
        task = load_task()
        export_model(build_classifier({"num_classes": len(task.classes)}), task.input.preprocess, task.class_names,
                     {"run": "bench-untrained"}, self.repo, MODEL, "cpu", max_batch_size=8)
        self.triton = ManagedTritonServer(self.repo, free_port(), free_port(), free_port(), [MODEL],
                                          work_dir=tmp / "triton_work").start()
        pacs_port = free_port()
        env = {
            "RADPAIR_LISTENER_STABLE_AGE": str(RADPAIR_STABLE_AGE),
            "RADPAIR_LISTENER_STABILITY_CHECK_INTERVAL": "0.1",
            "RADPAIR_TRITON_MODE": "remote", "RADPAIR_TRITON_URL": self.triton.http_url,
            "RADPAIR_TRITON_MODEL_REPOSITORY": str(self.repo),
            "RADPAIR_PIPELINE_POLL_INTERVAL": "0.1",
            "RADPAIR_PIPELINE_DESTINATIONS": f'[{{name = "pacs", ae_title = "PACS", host = "127.0.0.1", port = {pacs_port}}}]',
            "RADPAIR_PIPELINE_RULES": '[{name = "all", destinations = ["pacs"]}]',
        }
        self.data_dir = tmp / "radpair"
        self.radpair = ServeProcess(self.data_dir, env=env)
        assert self.radpair.port, "radpair serve did not start:\n" + self.radpair.log()
        self.pacs = Orthanc(tmp / "orthanc", radpair_port=self.radpair.port, stable_age=ORTHANC_STABLE_AGE,
                            aet="PACS", dicom_port=pacs_port).start()
        self.engine = make_engine(f"sqlite:///{(self.data_dir / 'radpair.db').resolve()}")
        self.sessions = session_factory(self.engine)

    def delivered(self, study_uid: str) -> list[float] | None:
        """Delivery acknowledgement times of the study's three results, once all are delivered."""
        with self.sessions() as s:
            rows = s.execute(select(Delivery.state, Delivery.delivered_at).join(Job, Job.id == Delivery.job_pk)
                             .join(Study, Study.id == Job.study_pk).where(Study.study_uid == study_uid)).all()
        if len(rows) == 3 and all(state == "delivered" for state, _ in rows):
            return [_epoch(at) for _, at in rows]
        return None

    def wait_delivered(self, study_uid: str, timeout: float = 180) -> list[float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (times := self.delivered(study_uid)) is not None:
                return times
            time.sleep(0.05)
        raise AssertionError(f"study {study_uid} not delivered in {timeout} s\n" + self.radpair.log()[-3000:])

    def stage_times(self) -> dict[str, dict[str, float]]:
        out = {}
        for line in self.radpair.lines:
            if m := _TIMINGS.search(line.strip()):
                out[m.group(1)] = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)s", m.group(2))}
        return out

    def stop(self) -> None:
        self.radpair.stop()
        self.pacs.stop()
        self.triton.stop()
        self.engine.dispose()


def _in_process_forward_ms(repo: Path, series_dir: Path) -> float:
    scripted = torch.jit.load(str(next(repo.glob(f"{MODEL}/*/model.pt"))))
    volume = build_transforms(PreprocessParams())(str(series_dir))[None].float()
    times = []
    with torch.no_grad():
        for _ in range(6):
            start = time.perf_counter()
            scripted(volume)
            times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times[1:]))


def test_end_to_end_latency_and_throughput(tmp_path: Path) -> None:
    cohort_dir = tmp_path / "cohort"
    make_cohort(cohort_dir, STUDIES + BURST + 1, 2026, size=(64, 64, 64), workers=2)
    cohort = read_cohort(cohort_dir)
    system = System(tmp_path)
    try:
        # Peer: the plain C-STORE of one study into Orthanc (also warms everything up end to end).
        warm = cohort[0]
        start = time.perf_counter()
        _storescu(sorted(warm.series_dir.glob("*.dcm")), system.pacs.dicom_port)
        store_only = time.perf_counter() - start
        system.wait_delivered(warm.study_uid)

        rows = []
        for study in cohort[1:1 + STUDIES]:
            _storescu(sorted(study.series_dir.glob("*.dcm")) + [study.report_path], system.pacs.dicom_port)
            sent = time.time()
            done = max(system.wait_delivered(study.study_uid))
            with system.sessions() as s:
                st = s.scalar(select(Study).where(Study.study_uid == study.study_uid))
                job = s.scalars(select(Job).where(Job.study_pk == st.id, Job.kind == "inference")).one()
                first, last, stable = _epoch(st.first_received_at), _epoch(st.last_received_at), _epoch(st.stable_at)
                created, finished = _epoch(job.created_at), _epoch(job.finished_at)
            rows.append({"study": study.study_uid, "total": done - sent, "pacs_stable_wait": first - sent,
                         "transfer_to_radpair": last - first, "radpair_stable_wait": stable - last,
                         "job_queue": created - stable, "job": finished - created, "delivery": done - finished})
        stages = system.stage_times()
        for row in rows:
            row.update({k: stages.get(row["study"], {}).get(k, float("nan")) for k in STAGES})
            row["beyond_stable"] = row["total"] - row["pacs_stable_wait"] - row["radpair_stable_wait"]

        burst = cohort[1 + STUDIES:]
        start = time.time()
        for study in burst:
            _storescu(sorted(study.series_dir.glob("*.dcm")), system.pacs.dicom_port)
        last_done = max(max(system.wait_delivered(s.study_uid, timeout=600)) for s in burst)
        per_minute = 60 * len(burst) / (last_done - start) if burst else float("nan")
        forward_ms = _in_process_forward_ms(system.repo, cohort[0].series_dir)
    finally:
        system.stop()

    keys = ("total", "beyond_stable", "pacs_stable_wait", "transfer_to_radpair", "radpair_stable_wait", "job_queue",
            *STAGES, "job", "delivery")
    summary = {k: {"p50_s": _pct([r[k] for r in rows], 50), "p95_s": _pct([r[k] for r in rows], 95)} for k in keys}
    triton_p50 = summary["triton"]["p50_s"]
    result = {
        "benchmark": "e2e", "studies": len(rows), "burst": len(burst), "volume": [64, 64, 64],
        "orthanc_stable_age_s": ORTHANC_STABLE_AGE, "radpair_stable_age_s": RADPAIR_STABLE_AGE,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "latency": summary, "burst_studies_per_minute": per_minute,
        "peer_store_only_s": store_only, "peer_in_process_forward_ms": forward_ms,
        "ratio_beyond_stable_to_store_only": summary["beyond_stable"]["p50_s"] / store_only,
        "ratio_triton_stage_to_in_process_forward": 1000 * triton_p50 / forward_ms,
        "target_p95_beyond_stable_s": 5.0, "rows": rows,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "e2e.json").write_text(json.dumps(result, indent=2))
    print(f"\nend to end, {len(rows)} studies of 64³ sent one at a time (seconds):")
    print(f"{'stage':<22}{'p50':>8}{'p95':>8}")
    for k in keys:
        print(f"{k:<22}{summary[k]['p50_s']:>8.2f}{summary[k]['p95_s']:>8.2f}")
    print(f"burst of {len(burst)} studies back to back: {per_minute:.1f} studies/minute")
    print(f"peer: plain C-STORE of a study into Orthanc {store_only:.2f} s -> beyond-stable latency is "
          f"{result['ratio_beyond_stable_to_store_only']:.1f}x that")
    print(f"peer: in-process torch forward {forward_ms:.0f} ms -> Triton stage is "
          f"{result['ratio_triton_stage_to_in_process_forward']:.2f}x that")
    print(f"target p95 beyond stable age < 5 s: {'met' if summary['beyond_stable']['p95_s'] < 5 else 'NOT met'}")
    assert len(rows) == STUDIES
