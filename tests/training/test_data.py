"""training.data: archive pairs by SQL (SQLite and PostgreSQL), patient-level splits, caching."""

from __future__ import annotations

import numpy as np

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.models import Instance, Patient, Report, Series, Study
from radpair.core.preprocess import PreprocessParams
from radpair.core.task import load_task
from radpair.training.data import PairedStudy, patient_folds, studies_from_archive, volume_dataset
from tests.support.dicom import write_series

TASK = load_task()


def _archive(url: str, store, n_slices: int, modality: str, series_uid: str, study: Study, session) -> Series:
    series = Series(series_uid=series_uid, study=study, modality=modality)
    session.add(series)
    folder = store / study.study_uid / series_uid
    volume = np.full((n_slices, 16, 16), 500, np.uint16)
    for k, path in enumerate(write_series(folder, volume, (3.0, 3.0, 3.0), modality=modality)):
        session.add(Instance(sop_instance_uid=f"{series_uid}.{k + 1}", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                             series=series, transfer_syntax_uid="1.2.840.10008.1.2.1",
                             path=str(path.relative_to(store)), size=path.stat().st_size, sha256="0" * 64))
    return series


def test_archive_pairs_by_sql(database_url, tmp_path):
    engine = make_engine(database_url)
    upgrade(engine)
    store = tmp_path / "instances"
    with session_factory(engine).begin() as session:
        patient = Patient(patient_id="P1")
        paired = Study(study_uid="1.2.3.1", patient=patient)
        unpaired = Study(study_uid="1.2.3.2", patient=patient)
        session.add_all([patient, paired, unpaired])
        _archive(database_url, store, 9, "MR", "1.2.3.1.1", paired, session)  # smaller MR series
        _archive(database_url, store, 12, "MR", "1.2.3.1.2", paired, session)  # the selected one
        _archive(database_url, store, 16, "CT", "1.2.3.1.3", paired, session)  # not MR
        _archive(database_url, store, 10, "MR", "1.2.3.2.1", unpaired, session)  # no report
        session.add(Report(sr_instance_uid="1.2.3.1.9", study=paired, sr_study_uid="1.2.3.1",
                           text="Lesion in the left cerebellar hemisphere."))
    engine.dispose()
    studies = studies_from_archive(database_url, store, tmp_path / "links", TASK)
    assert [(s.study_uid, s.patient_id) for s in studies] == [("1.2.3.1", "P1")]
    assert studies[0].series_dir.name == "1.2.3.1.2" and len(list(studies[0].series_dir.iterdir())) == 12
    assert studies[0].location_index == TASK.location_names.index("infratentorial")  # "cerebellar"
    item = volume_dataset(studies, PreprocessParams(spatial_size=(16, 16, 16)), cache=False)[0]
    assert tuple(item["image"].shape) == (1, 16, 16, 16)


def test_splits_never_share_a_patient():
    studies = [PairedStudy(f"1.{i}", f"P{i // 2}", series_dir=None, report="", label_index=i % 2) for i in range(40)]
    for train, test in patient_folds(studies, 4, seed=0):
        assert not {studies[i].patient_id for i in train} & {studies[i].patient_id for i in test}
        assert {studies[i].label_index for i in test} == {0, 1}


def test_cached_dataset_never_rereads_the_series(tmp_path):
    """After the cache is filled an item comes from memory or the cache folder: the DICOM files can go."""
    folders = []
    for i in range(2):
        folders.append(tmp_path / f"series{i}")
        write_series(folders[-1], np.full((8, 16, 16), 300 + 100 * i, np.uint16), (3.0, 3.0, 3.0))
    studies = [PairedStudy(f"1.2.{i}", f"P{i}", folder, "report") for i, folder in enumerate(folders)]
    params = PreprocessParams(spacing=(3.0, 3.0, 3.0), spatial_size=(8, 8, 8))
    datasets = [volume_dataset(studies, params, workers=1), volume_dataset(studies, params, cache_dir=str(tmp_path / "c"))]
    before = [[ds[i]["image"].clone() for i in range(2)] for ds in datasets]
    for folder in folders:
        for path in folder.iterdir():
            path.unlink()
    for ds, images in zip(datasets, before):
        for i in range(2):
            assert np.array_equal(ds[i]["image"], images[i])
