"""``radpair labels import``: a cohort's labels.csv and a site's list, upserted; bad files refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.models import Label
from radpair.retrain.labels import LabelFileError, import_labels
from radpair.cli import main
from radpair.core.task import load_task
from radpair.training.cohort import read_cohort
from tests.support.cohorts import make_cohort

CLASS_NAMES = load_task().class_names


@pytest.fixture
def sessions(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path / 'radpair.db'}")
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def test_site_list_by_accession_then_relabel(sessions, tmp_path: Path) -> None:
    site = tmp_path / "pathology.csv"
    site.write_text("AccessionNumber,Patient ID,Diagnosis\nA1,P1,BRAF-fusion\nA2,,BRAF-V600E\nA3,P3,\n")
    summary = import_labels(sessions, site, CLASS_NAMES)
    assert (summary.added, summary.skipped_empty) == (2, 1)
    site.write_text("AccessionNumber,Patient ID,Diagnosis\nA1,P1,BRAF-V600E\nA2,,BRAF-V600E\n")
    summary = import_labels(sessions, site, CLASS_NAMES)
    assert (summary.added, summary.updated, summary.unchanged) == (0, 1, 1)
    with sessions() as session:
        rows = {(r.accession_number, r.patient_id): r.label for r in session.scalars(select(Label))}
    assert rows == {("A1", "P1"): "BRAF-V600E", ("A2", ""): "BRAF-V600E"}


def test_a_bad_row_imports_nothing(sessions, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("study_uid,label\n1.2.3,BRAF-fusion\n1.2.4,BRAF fusion\n")
    with pytest.raises(LabelFileError, match="line 3: label 'BRAF fusion' is not one of"):
        import_labels(sessions, bad, CLASS_NAMES)
    (tmp_path / "nokey.csv").write_text("label\nBRAF-fusion\n")
    with pytest.raises(LabelFileError, match="no study_uid, accession_number or patient_id column"):
        import_labels(sessions, tmp_path / "nokey.csv", CLASS_NAMES)
    with sessions() as session:
        assert session.scalars(select(Label)).all() == []


def test_cli_imports_a_cohort_labels_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cohort = tmp_path / "cohort"
    make_cohort(cohort, n=4, seed=1, size=(16, 32, 32), lesion_free_fraction=0.25)
    labelled = sum(1 for s in read_cohort(cohort) if s.label)
    assert main(["labels", "import", "--data-dir", str(tmp_path / "data"), str(cohort / "labels.csv")]) == 0
    assert f"{labelled} added, 0 updated, 0 unchanged, {4 - labelled} without a label skipped" in capsys.readouterr().out
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'radpair.db'}")
    with session_factory(engine)() as session:
        rows = session.scalars(select(Label)).all()
    assert len(rows) == labelled and all(r.study_uid and r.accession_number and r.label in CLASS_NAMES for r in rows)
    engine.dispose()
