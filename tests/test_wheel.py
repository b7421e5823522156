"""radpair as a site installs it: a wheel built with `python -m build`, installed with its
dependencies into a fresh venv outside the repository, then `radpair init`, `radpair serve`
(embedded Triton, the model shipped in the wheel) and a study sent with storescu, to a result.

Nothing of the checkout is used after the build: the venv's interpreter runs from a folder
outside it, and the checkout's model repository is unchanged afterwards."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checks import wait_for
from tests.support.dcmtk import storescu
from tests.support.ports import free_port
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def test_wheel_installs_and_serves_a_study_without_the_checkout(tmp_path: Path) -> None:
    shipped_before = _tree_digest(REPO / "triton_models")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("radpair-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=1500, env=_clean_env())
    assert install.returncode == 0, install.stderr[-3000:]
    radpair = str(venv / "bin" / "radpair")
    site = tmp_path / "site"
    site.mkdir()
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import radpair; print(radpair.__file__)"],
                           capture_output=True, text=True, check=True, cwd=site, env=_clean_env()).stdout
    assert where.startswith(str(venv)), where

    init = subprocess.run([radpair, "init", str(site)], capture_output=True, text=True, timeout=120, cwd=site,
                          env=_clean_env())
    assert init.returncode == 0, init.stderr
    config = site / "radpair.toml"
    study = subprocess.run([radpair, "cohort", "--out", str(tmp_path / "cohort"), "--n", "1", "--seed", "5",
                            "--lesion-free-fraction", "0"], capture_output=True, text=True, timeout=300, cwd=site,
                           env=_clean_env())
    assert study.returncode == 0, study.stderr
    series = sorted((tmp_path / "cohort").rglob("*.dcm"))

    data_dir = site / "data"
    serve = ServeProcess(data_dir, radpair=[radpair, "--config", str(config)], cwd=site, timeout=180, env={
        **_clean_env(), "RADPAIR_TRITON_MODE": "embedded", "RADPAIR_TRITON_HTTP_PORT": str(free_port()),
        "RADPAIR_TRITON_GRPC_PORT": str(free_port()), "RADPAIR_TRITON_METRICS_PORT": str(free_port()),
        "RADPAIR_LISTENER_STABLE_AGE": "1", "RADPAIR_LISTENER_STABILITY_CHECK_INTERVAL": "0.25",
        "RADPAIR_PIPELINE_POLL_INTERVAL": "0.25"})
    try:
        storescu(series, serve.port, "RADPAIR")

        def result_line() -> str | None:
            out = subprocess.run([radpair, "status", "--config", str(config)], capture_output=True, text=True,
                                 timeout=60, cwd=site, env=_clean_env()).stdout
            return next((line for line in out.splitlines() if "radpair_classifier v" in line and " p=" in line), None)

        line = wait_for("a result in `radpair status`", result_line, timeout=240)
        assert line
        assert (data_dir / "models" / "radpair_classifier" / "config.pbtxt").is_file(), "served from the data directory"
    finally:
        serve.kill()
        print(serve.log())  # shown by pytest when the test fails
    assert _tree_digest(REPO / "triton_models") == shipped_before, "serving wrote into the checkout"
