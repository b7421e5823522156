"""An analysed study whose results wait in the outbox: what the delivery and chaos tests start from."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.settings import load_settings
from radpair.core.store import InstanceStore
from radpair.pipeline.analysis import StudyAnalysis, enqueue_stable_studies
from radpair.pipeline.delivery import Outbox
from radpair.pipeline.jobs import JobQueue, QueuePolicy
from radpair.pipeline.workers import WorkerPool
from tests.support.archive import archive_files, mark_stable
from tests.support.dicom import write_head_series
from tests.support.models import BrightestVoxelModel


def analysed_study(tmp_path: Path, destinations: list[dict], policy: QueuePolicy,
                   database_url: str = "") -> SimpleNamespace:
    """An archived, analysed study whose 3 results each have a pending delivery job per destination
    (its pool has one worker, not started: tests run jobs with ``pool.run_one`` or start it)."""
    settings = load_settings(None, environ={}, overrides={
        "data_dir": str(tmp_path / "data"), "database.url": database_url, "pipeline.destinations": destinations,
        "pipeline.rules": [{"name": "all", "destinations": [d["name"] for d in destinations]}],
    })
    engine = make_engine(settings.database_url)
    upgrade(engine)
    sessions = session_factory(engine)
    store = InstanceStore(settings.store_dir)
    queue = JobQueue(sessions, policy)
    handlers = {"inference": StudyAnalysis(settings, sessions, store, BrightestVoxelModel()),
                "delivery": Outbox(sessions, store, settings.pipeline.destinations)}
    study_uid = archive_files(sessions, store, write_head_series(tmp_path / "mr"))
    mark_stable(sessions, study_uid)
    enqueue_stable_studies(sessions)
    pool = WorkerPool(queue, handlers, 1, 0.1, 5.0)
    pool.run_one(queue.claim("t", ("inference",)), "t")
    return SimpleNamespace(engine=engine, settings=settings, sessions=sessions, queue=queue, pool=pool,
                           study_uid=study_uid)
