"""`radpair serve` on its embedded defaults (what `make serve` runs): it starts the tritonserver
shipped in the nvidia-pytriton wheel with the model shipped in triton_models/ (copied into the data
directory's model repository on the first start), and a study sent to the listener gets an analysis
by that model. Killing radpair (SIGKILL) takes the server with it, so
a restart finds the Triton ports free; a server that cannot start leaves the service up and is
retried until it can."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import pytest
from sqlalchemy import select

from radpair.core.db import make_engine, session_factory
from radpair.core.models import Result, Study
from radpair.pipeline import codes
from radpair.serving.repository import ModelRepository, shipped_repository
from radpair.training.cohort import CohortStudy, read_cohort
from tests.support.checks import wait_for
from tests.support.dcmtk import storescu
from tests.support.ports import free_port
from tests.support.serve import RADPAIR, ServeProcess

pytestmark = pytest.mark.slow
SHIPPED = "radpair_classifier"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: only its parent has not reaped it
        return stat.read().split(") ", 1)[1][0] != "Z"


def _study(tmp_path: Path) -> CohortStudy:
    cohort_dir = tmp_path / "cohort"
    subprocess.run([sys.executable, "-m", "radpair", "cohort", "--out", str(cohort_dir), "--n", "1", "--seed", "5",
                    "--lesion-free-fraction", "0"], check=True, capture_output=True,
                   timeout=300)
    (study,) = read_cohort(cohort_dir)
    return study


def _serve(data_dir: Path, http_port: int) -> ServeProcess:
    return ServeProcess(data_dir, env={  # only its own ports and short waits; the triton.* mode stays the default
        "RADPAIR_TRITON_MODE": "embedded",
        "RADPAIR_TRITON_HTTP_PORT": str(http_port), "RADPAIR_TRITON_GRPC_PORT": str(free_port()),
        "RADPAIR_TRITON_METRICS_PORT": str(free_port()),
        "RADPAIR_LISTENER_STABLE_AGE": "1", "RADPAIR_LISTENER_STABILITY_CHECK_INTERVAL": "0.25",
        "RADPAIR_PIPELINE_POLL_INTERVAL": "0.25",
    })


def _sr_result(data_dir: Path, study_uid: str, timeout: float) -> Result:
    engine = make_engine(f"sqlite:///{(data_dir / 'radpair.db').resolve()}")
    sessions = session_factory(engine)

    def sr() -> Result | None:
        with sessions() as s:
            return s.scalars(select(Result).join(Study, Study.id == Result.study_pk)
                             .where(Study.study_uid == study_uid, Result.kind == "sr")).first()

    try:
        return wait_for("the study's SR", sr, timeout=timeout)
    finally:
        engine.dispose()


def test_serve_defaults_run_the_shipped_model_on_embedded_triton(tmp_path: Path) -> None:
    study = _study(tmp_path)
    shipped_version = ModelRepository(shipped_repository()).current(SHIPPED)
    data_dir = tmp_path / "data"
    serve = _serve(data_dir, free_port())
    try:
        storescu(sorted(study.series_dir.glob("*.dcm")) + [study.report_path], serve.port, "RADPAIR")
        result = _sr_result(data_dir, study.study_uid, timeout=120)
        assert (result.model_name, result.model_version) == (SHIPPED, str(shipped_version)), serve.log()
        served = ModelRepository(data_dir / "models")
        assert served.current(SHIPPED) == shipped_version, "the data directory serves a copy of the shipped model"
        status = subprocess.run([*RADPAIR, "status", "--data-dir", str(data_dir)], capture_output=True, text=True,
                                timeout=60)
        assert status.returncode == 0, status.stderr
        assert re.search(r"^inference\s+done\s+1\b", status.stdout, re.M), status.stdout
        assert f"{result.predicted_class} p={result.probability:.3f} ({SHIPPED} v{shipped_version})" in status.stdout
        sr = hd.sr.srread(data_dir / "instances" / result.path)
        (group,) = sr.content.get_volumetric_roi_measurement_groups()
        (probability,) = group.get_measurements(name=codes.CLASS_PROBABILITY)
        assert 0.5 <= probability.value <= 1.0
    finally:
        triton_pids = [int(p) for p in re.findall(r"tritonserver started \(pid (\d+)", serve.log())]
        serve.kill()
        print(serve.log())  # shown by pytest when the test fails
    assert triton_pids, serve.log()
    deadline = time.monotonic() + 30
    while any(_pid_alive(p) for p in triton_pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_pid_alive(p) for p in triton_pids), "a SIGKILLed radpair left its tritonserver running"


def test_triton_that_cannot_start_leaves_the_service_up_and_is_retried(tmp_path: Path) -> None:
    study = _study(tmp_path)
    http_port = free_port()
    blocker = socket.socket()  # the port Triton wants is taken: a real start failure
    blocker.bind(("127.0.0.1", http_port))
    blocker.listen()
    data_dir = tmp_path / "data"
    serve = _serve(data_dir, http_port)
    try:
        wait_for("the failed start", lambda: "embedded Triton did not start" in serve.log(), timeout=120)
        storescu(sorted(study.series_dir.glob("*.dcm")) + [study.report_path], serve.port, "RADPAIR")
        assert serve.proc.poll() is None, serve.log()
        blocker.close()
        result = _sr_result(data_dir, study.study_uid, timeout=180)
        assert result.model_name == SHIPPED
        assert "tritonserver restarted" in serve.log()
    finally:
        blocker.close()
        serve.kill()
        print(serve.log())
