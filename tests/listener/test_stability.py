"""Study stability: receiving → stable after stable_age s of silence; a late instance makes it
receiving again and the next stabilisation bumps stable_generation (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy import select

from radpair.core.models import Study, StudyState
from radpair.listener.stability import mark_stable_studies
from tests.support.listener import RunningListener
from tests.support.dicom import make_series


def _state(listener: RunningListener) -> tuple[StudyState, int]:
    with listener.sessions() as s:
        study = s.scalars(select(Study)).one()
        return study.state, study.stable_generation


def test_stability_transitions(start_listener, database_url: str, tmp_path: Path) -> None:  # noqa: ANN001
    listener = start_listener(database_url, **{"listener.stable_age": 1.0})
    age = listener.settings.listener.stable_age
    study = generate_uid()
    listener.storescu(*make_series(tmp_path / "a", 2, study_uid=study))
    assert mark_stable_studies(listener.sessions, age) == []
    assert _state(listener) == (StudyState.RECEIVING, 0)

    time.sleep(age + 0.2)
    assert mark_stable_studies(listener.sessions, age) == [study]
    assert _state(listener) == (StudyState.STABLE, 1)
    assert mark_stable_studies(listener.sessions, age) == []  # stable studies are not looked at again

    listener.storescu(*make_series(tmp_path / "b", 1, study_uid=study))  # a late series
    assert _state(listener) == (StudyState.RECEIVING, 1)
    assert mark_stable_studies(listener.sessions, age) == []
    time.sleep(age + 0.2)
    assert mark_stable_studies(listener.sessions, age) == [study]
    assert _state(listener) == (StudyState.STABLE, 2)
