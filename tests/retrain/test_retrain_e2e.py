"""Retraining end to end, on real parts: a cohort sent over DICOM into `radpair serve` (listener +
pipeline), `radpair labels import`, two `radpair retrain --now` processes racing, the real
tritonserver hot-swapping versions, the next study's SR naming the version, a worse candidate
rejected, a rollback.

One test, in phases, because each phase needs the state the previous one left (an archive, a
serving version); the training configuration is tiny (32³ volumes, a ResNet-10 with 8–16
channels, one epoch each) so a run takes seconds, not hours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import func, select

from radpair.cli import main
from radpair.core.db import make_engine, session_factory
from radpair.core.models import ModelStatus, ModelVersion, Report, Result, RetrainRun
from radpair.serving.client import TritonClient
from radpair.serving.repository import ModelRepository
from radpair.serving.server import ManagedTritonServer
from radpair.training.cohort import read_cohort
from tests.support.checks import text_items, wait_for
from tests.support.cohorts import make_cohort
from tests.support.models import task_file
from tests.support.ports import free_port
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.slow

MODEL = "radpair_classifier"
STUDIES = 16  # plus one sent after version 1 is serving
TINY = """
seed = 0
[data]
augment = false
[image]
depth = 10
widths = [8, 8, 16, 16]
head_hidden = 16
frozen_stages = 0
dropout = 0.0
[text]
max_length = 64
[pretrain]
epochs = 1
batch_size = 4
embed_dim = 16
[finetune]
epochs = 2
folds = 2
batch_size = 4
warmup_epochs = 0
"""
# Same network, a learning rate that blows the weights up: the candidate diverges to NaN and is refused.
WORSE = TINY.replace("[finetune]\n", "[finetune]\nlr = 1.0e12\n")


def radpair_here(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                 *args: str) -> tuple[int, str]:
    """The same command line in this process (no second torch import): exit status and stdout."""
    for key in [k for k in os.environ if k.startswith("RADPAIR_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("RADPAIR_"):
            monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(list(args))
    return code, capsys.readouterr().out


def test_retrain_promotes_gates_serves_and_rolls_back(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cohort_dir = tmp_path / "cohort"
    make_cohort(cohort_dir, n=STUDIES + 1, seed=7, size=(32, 32, 32), lesion_free_fraction=0.05, workers=2)
    *archived, later = read_cohort(cohort_dir)
    repo = ModelRepository(tmp_path / "triton_models")
    repo.root.mkdir()
    (tmp_path / "tiny.toml").write_text(TINY)
    (tmp_path / "worse.toml").write_text(WORSE)
    data_dir = tmp_path / "data"
    triton = ManagedTritonServer(repo.root, free_port(), free_port(), free_port(), [], work_dir=tmp_path / "triton",
                                 restart_backoff=0.2)
    triton.start()
    env = {**os.environ, "TCP_NODELAY": "1",
           "RADPAIR_DATA_DIR": str(data_dir),
           "RADPAIR_LISTENER_STABLE_AGE": "1.0",
           "RADPAIR_LISTENER_STABILITY_CHECK_INTERVAL": "0.25",
           "RADPAIR_TRITON_MODE": "remote",
           "RADPAIR_TRITON_URL": triton.http_url,
           "RADPAIR_TRITON_MODEL_REPOSITORY": str(repo.root),
           "RADPAIR_PIPELINE_POLL_INTERVAL": "0.25",
           "RADPAIR_PIPELINE_BACKOFF_MAX": "2.0",
           # Only what the PACS sends is analysed; the cohort arrives from a modality.
           "RADPAIR_PIPELINE_RULES": '[{name = "from-pacs", calling_ae = "^PACS$"}]',
           "RADPAIR_TASK": str(task_file(tmp_path / "task.toml")),
           "RADPAIR_RETRAIN_TRAIN_CONFIG": str(tmp_path / "tiny.toml"),
           "RADPAIR_RETRAIN_MIN_NEW_PAIRS": str(STUDIES),
           "RADPAIR_RETRAIN_HELD_OUT_FRACTION": "0.25"}
    serve = ServeProcess(data_dir, env=env)
    engine = make_engine(f"sqlite:///{data_dir / 'radpair.db'}")
    sessions = session_factory(engine)
    client = TritonClient(triton.http_url, repo.root, "http", MODEL, timeout=30, retries=6, retry_backoff=0.25)
    try:
        # The archive: every study (MR series + SR report) over DICOM, then the labels.
        code, out = radpair_here(capsys, monkeypatch, env, "send", *(str(s.series_dir.parent) for s in archived),
                                 "--to", f"127.0.0.1:{serve.port}", "--ae-title", "RADPAIR", "--calling-ae-title", "MODALITY")
        assert code == 0, out

        def paired() -> bool:
            with sessions() as session:
                return session.scalar(select(func.count(Report.id)).where(Report.study_pk.is_not(None))) == STUDIES

        wait_for("every report paired with its study", paired, timeout=60)
        code, out = radpair_here(capsys, monkeypatch, env, "labels", "import", str(cohort_dir / "labels.csv"))
        assert code == 0 and f"{sum(1 for s in archived if s.label) + (1 if later.label else 0)} added" in out, out

        # Two processes race: exactly one run, and it serves version 1.
        racers = [subprocess.Popen([sys.executable, "-m", "radpair", "retrain", "--now"], env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        outputs = [(p.wait(timeout=600), *p.communicate()) for p in racers]
        codes = sorted(code for code, _, _ in outputs)
        assert codes == [0, 3], outputs
        winner = next(out for code, out, _ in outputs if code == 0)
        assert "promoted" in winner, outputs
        with sessions() as session:
            runs = session.scalars(select(RetrainRun)).all()
            assert [(r.outcome, r.snapshot_size, r.new_pairs) for r in runs] == [("promoted", STUDIES, STUDIES)]
            (v1,) = session.scalars(select(ModelVersion)).all()
            assert (v1.version, v1.status, v1.parent_pk) == (1, ModelStatus.SERVING, None)
            snapshot = json.loads(v1.data_snapshot)
            assert len(snapshot["studies"]) == STUDIES and len(snapshot["sha256"]) == 64
            assert set(snapshot["held_out"]) < set(snapshot["studies"])
            assert json.loads(v1.metrics)["n"] == len(snapshot["held_out"])
        assert client.serving_version() == "1"

        # The next study from the PACS is analysed by version 1, and its SR says so.
        code, out = radpair_here(capsys, monkeypatch, env, "send", str(later.series_dir.parent),
                                 "--to", f"127.0.0.1:{serve.port}", "--ae-title", "RADPAIR", "--calling-ae-title", "PACS")
        assert code == 0, out

        def sr_result() -> Result | None:
            with sessions() as session:
                return session.scalars(select(Result).where(Result.kind == "sr")).first()

        sr = wait_for("the SR of the next study", sr_result, timeout=120)
        assert sr.model_version == "1"
        texts = dict(text_items(pydicom.dcmread(data_dir / "instances" / sr.path)))
        assert texts[("DCM", "111003")] == "1", "the SR's algorithm version is the serving model version"

        # A deliberately worse configuration is rejected; version 1 keeps serving.
        env_again = {**env, "RADPAIR_RETRAIN_MIN_NEW_PAIRS": "0"}
        code, out = radpair_here(capsys, monkeypatch, env_again, "retrain", "--now", "--train-config",
                                 str(tmp_path / "worse.toml"))
        assert code == 0 and "rejected" in out, out
        assert client.serving_version() == "1" and repo.current(MODEL) == 1
        with sessions() as session:
            rejected = session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())).first()
            assert (rejected.status, rejected.version) == (ModelStatus.REJECTED, None)
            assert "training failed" in rejected.reason and "NaN" in rejected.reason, rejected.reason
            assert rejected.parent_pk == v1.id and Path(rejected.run_dir).is_dir(), "a rejected candidate is kept"

        # A good candidate (any held-out score accepted) becomes version 2; rollback restores version 1.
        code, out = radpair_here(capsys, monkeypatch, {**env_again, "RADPAIR_RETRAIN_TOLERANCE": "1.0"}, "retrain", "--now")
        assert code == 0 and "promoted" in out, out
        assert client.serving_version() == "2"
        code, out = radpair_here(capsys, monkeypatch, env, "model", "rollback", "--reason", "overlays look worse")
        assert code == 0, out
        wait_for("version 1 serving again", lambda: client.serving_version() == "1", timeout=60)
        with sessions() as session:
            rows = {r.version: r for r in session.scalars(select(ModelVersion).where(ModelVersion.version.is_not(None)))}
            assert rows[1].status is ModelStatus.SERVING
            assert rows[2].status is ModelStatus.RETIRED and "overlays look worse" in rows[2].reason
            assert rows[2].parent_pk == rows[1].id
        code, listing = radpair_here(capsys, monkeypatch, env, "model", "list")
        assert code == 0 and "lineage" in listing and "rejected" in listing, listing
        with capsys.disabled():
            print("\n" + listing)
    finally:
        client.close()
        serve.stop()
        triton.stop()
        engine.dispose()
