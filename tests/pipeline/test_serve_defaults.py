"""`radpair serve` on its embedded defaults (what `make serve` runs): it starts the tritonserver
shipped in the nvidia-pytriton wheel with the model shipped in triton_models/, and a study sent to
the listener gets an analysis by that model. Killing radpair (SIGKILL) takes the server with it, so
a restart finds the Triton ports free."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import highdicom as hd
import pytest
from sqlalchemy import select

from core.db import make_engine, session_factory
from core.models import Result, Study
from pipeline import codes
from pipeline.triton_repository import ModelRepository, default_repository
from pipeline.triton_server import TRITON_DIR
from tests.listener.serve_process import ServeProcess
from tests.pipeline.test_e2e import storescu, wait_for
from tests.support.postgres import free_port
from training.cohort import read_cohort

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (TRITON_DIR / "bin" / "tritonserver").is_file(), reason="tritonserver (nvidia-pytriton) is missing"),
]
SHIPPED = "radpair_classifier"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited: only its parent has not reaped it
        return stat.read().split(") ", 1)[1][0] != "Z"


def test_serve_defaults_run_the_shipped_model_on_embedded_triton(tmp_path: Path) -> None:
    cohort_dir = tmp_path / "cohort"
    subprocess.run([sys.executable, "-m", "radpair", "cohort", "--out", str(cohort_dir), "--n", "1", "--seed", "5",
                    "--size", "24", "40", "40", "--lesion-free-fraction", "0"], check=True, capture_output=True,
                   timeout=300)
    (study,) = read_cohort(cohort_dir)
    shipped_version = ModelRepository(default_repository()).current(SHIPPED)
    env = {  # only what a test must change: its own ports and short waits; the triton.* mode stays the default
        "RADPAIR_TRITON_MODE": "embedded",
        "RADPAIR_TRITON_HTTP_PORT": str(free_port()), "RADPAIR_TRITON_GRPC_PORT": str(free_port()),
        "RADPAIR_TRITON_METRICS_PORT": str(free_port()),
        "RADPAIR_LISTENER_STABLE_AGE": "1", "RADPAIR_LISTENER_STABILITY_CHECK_INTERVAL": "0.25",
        "RADPAIR_PIPELINE_POLL_INTERVAL": "0.25",
    }
    data_dir = tmp_path / "data"
    serve = ServeProcess(data_dir, env=env)
    try:
        storescu(sorted(study.series_dir.glob("*.dcm")) + [study.report_path], serve.port, "RADPAIR")
        engine = make_engine(f"sqlite:///{(data_dir / 'radpair.db').resolve()}")
        sessions = session_factory(engine)

        def sr_result() -> Result | None:
            with sessions() as s:
                return s.scalars(select(Result).join(Study, Study.id == Result.study_pk)
                                 .where(Study.study_uid == study.study_uid, Result.kind == "sr")).first()

        result = wait_for("the study's SR", sr_result, timeout=120)
        engine.dispose()
        assert (result.model_name, result.model_version) == (SHIPPED, str(shipped_version)), serve.log()
        sr = hd.sr.srread(data_dir / "instances" / result.path)
        (group,) = sr.content.get_volumetric_roi_measurement_groups()
        (probability,) = group.get_measurements(name=codes.CLASS_PROBABILITY)
        assert 0.5 <= probability.value <= 1.0
        assert "tritonserver started" in serve.log()
    finally:
        triton_pids = [int(p) for p in re.findall(r"tritonserver started \(pid (\d+)", serve.log())]
        serve.kill()
        print(serve.log())  # shown by pytest when the test fails
    assert triton_pids, serve.log()
    deadline = time.monotonic() + 30
    while any(_pid_alive(p) for p in triton_pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_pid_alive(p) for p in triton_pids), "a SIGKILLed radpair left its tritonserver running"
