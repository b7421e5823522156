"""The version serving before retraining existed (shipped in triton_models/, or exported by hand)
enters the lineage at the next run, scored on the held-out studies like every candidate."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.models import ModelStatus, ModelVersion
from radpair.serving.repository import ModelRepository
from radpair.core.task import load_task
from radpair.retrain.lineage import record_serving_version
from radpair.training.data import studies_from_cohort
from tests.support.cohorts import make_cohort
from tests.support.models import MODEL, export_small


def test_a_version_exported_by_hand_is_recorded_and_scored(tmp_path: Path) -> None:
    make_cohort(tmp_path / "cohort", n=4, seed=2, size=(16, 32, 32), lesion_free_fraction=0.0)
    held_out = studies_from_cohort(tmp_path / "cohort", load_task())
    repo = ModelRepository(tmp_path / "repo")
    assert export_small(repo.root, seed=3) == 1
    engine = make_engine(f"sqlite:///{tmp_path / 'radpair.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    with sessions.begin() as session:  # a row left serving although the repository has moved on
        session.add(ModelVersion(model_name=MODEL, version=7, status=ModelStatus.SERVING))

    row = record_serving_version(sessions, repo, MODEL, held_out)

    assert (row.version, row.status) == (1, ModelStatus.SERVING)
    assert "found serving in the model repository" in row.reason
    metrics = json.loads(row.metrics)
    assert metrics["n"] == 4 and 0.0 <= metrics["auc"] <= 1.0 and metrics["dice_2d"] is None
    assert metrics["sensitivity"] is not None and metrics["specificity"] is None, "no lesion-free study to score"
    assert json.loads(row.run_config) == {} and row.run_dir == "test-seed-3"
    with sessions() as session:
        stale = session.scalars(select(ModelVersion).where(ModelVersion.version == 7)).one()
    assert stale.status is ModelStatus.RETIRED and "version 1 is" in stale.reason
    assert record_serving_version(sessions, repo, MODEL, held_out).id == row.id, "recorded once"
    engine.dispose()
