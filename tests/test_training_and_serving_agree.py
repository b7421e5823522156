"""Training and serving read the same inputs from a study: the same series and the same report text.

A study as a PACS sends it — a localiser, two sequences, and a report followed by a corrected one —
goes through the real listener into the archive. Training's archive data set and the pipeline's
routing then pick the series and the text, with the task's one input rule and report policy, on
the default policy ("latest") and on "all".
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from radpair.core.models import Study
from radpair.core.store import InstanceStore
from radpair.core.task import load_task
from radpair.pipeline.rules import Route, route
from radpair.training.data import studies_from_archive
from tests.support.checks import wait_for
from tests.support.dicom import make_report, write_series
from tests.support.listener import start_listener
from tests.support.models import task_file


@pytest.fixture(scope="module")
def archived(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a running listener
    tmp = tmp_path_factory.mktemp("agree")
    listener = start_listener(tmp / "data")
    study = "1.2.826.0.1.3680043.10.999.1"
    volume = np.random.default_rng(0).integers(0, 1000, (30, 24, 24), dtype=np.uint16)
    localiser = write_series(tmp / "loc", volume, study_uid=study, series_number=1, description="3-plane loc",
                             image_type=("DERIVED", "PRIMARY", "LOCALIZER"))
    t2 = write_series(tmp / "t2", volume[:24], study_uid=study, series_number=3, description="T2 AX")
    t1 = write_series(tmp / "t1", volume[:16], study_uid=study, series_number=2, description="T1 AX")
    first = make_report(tmp / "sr1.dcm", t2, "Mass in the left frontal lobe.", "Supratentorial lesion.")
    second = make_report(tmp / "sr2.dcm", t2, "Mass in the cerebellar vermis.", "Infratentorial lesion (corrected).")
    for files in (localiser, t2, t1, [first], [second]):
        assert listener.storescu(*files).returncode == 0
    yield listener, study
    listener.service.stop(grace=5)
    listener.engine.dispose()


@pytest.mark.parametrize("policy", ["latest", "all"])
def test_training_and_serving_pick_the_same_series_and_text(archived, policy: str, tmp_path: Path) -> None:  # noqa: ANN001
    listener, study_uid = archived
    path = task_file(tmp_path / "task.toml", spatial_size=(16, 16, 16))
    path.write_text(path.read_text().replace('policy = "latest"', f'policy = "{policy}"'))
    task = load_task(path)
    settings = listener.settings
    store = InstanceStore(settings.store_dir)

    def paired() -> bool:
        return len(studies_from_archive(settings.database_url, store.root, tmp_path / "probe", task)) == 1

    wait_for("the reports to be paired", paired, timeout=30)
    (trained,) = studies_from_archive(settings.database_url, store.root, tmp_path / "links", task)
    with listener.sessions() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    served = route(dataclasses.replace(settings, task=str(path)), listener.sessions, study, store)
    assert isinstance(served, Route)

    assert trained.series_dir.name == served.inputs.series.series_uid
    assert served.inputs.series.description == "T2 AX", "the localiser is larger but never analysed; T2 has most slices"
    assert sorted(os.path.realpath(p) for p in trained.series_dir.iterdir()) == \
        sorted(str((store.root / p).resolve()) for p in served.inputs.paths)
    assert trained.report == served.inputs.report
    assert "cerebellar vermis" in trained.report
    assert ("left frontal lobe" in trained.report) == (policy == "all")
    location = task.location_of(served.inputs.report)
    assert trained.location_index == task.location_index(location)
    assert location == ("transtentorial" if policy == "all" else "infratentorial")
