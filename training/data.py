"""Paired image–report data sets (cohort folder or archive), patient-level splits, caching.

Both sources give :class:`PairedStudy` records, labelled and located through the task
(:mod:`radpair.core.task`). From the archive, the series and the report text are chosen by the
same task rules the pipeline serves with (:mod:`radpair.core.series`, ``task.report_text``).
Volumes go through the shared preprocessing (``core.preprocess``) once and are cached (MONAI
``CacheDataset`` in memory, or ``PersistentDataset`` on disk), so epochs after the first never
re-read DICOM; augmentation is applied afterwards on tensors (:mod:`radpair.training.augment`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, EnsureTyped
from sklearn.model_selection import StratifiedGroupKFold
from sqlalchemy import select

from radpair.core.preprocess import PreprocessParams, build_paired_transforms
from radpair.core.task import TaskDefinition
from radpair.training.cohort import read_cohort


@dataclass(frozen=True)
class PairedStudy:
    study_uid: str
    patient_id: str
    series_dir: Path
    report: str
    label_index: int = -1  # index into the task's classes, -1 unlabelled (or lesion-free)
    location_index: int = -1  # index into the task's locations; len(locations): none named
    mask_path: Path | None = None
    lesion: int = -1  # 1 a lesion, 0 none, -1 unknown


def studies_from_cohort(folder: str | Path, task: TaskDefinition) -> list[PairedStudy]:
    """A folder written by ``radpair cohort`` (for ``task``), read through ``read_cohort``."""
    return [
        PairedStudy(
            study_uid=s.study_uid,
            patient_id=s.patient_id,
            series_dir=Path(s.series_dir),
            report=s.report_text,
            label_index=task.class_index(s.label),
            location_index=task.location_index(s.location),
            mask_path=Path(s.mask_path) if s.mask_path else None,
            lesion=int(s.has_lesion),
        )
        for s in read_cohort(Path(folder))
    ]


def studies_from_archive(database_url: str, store_dir: str | Path, link_dir: str | Path,
                         task: TaskDefinition) -> list[PairedStudy]:
    """Archived studies with a series that fits the task's input rule and a paired report.

    The series and the report text are the ones the pipeline would analyse (the task's input rule
    and report policy); the location is what the task's parser reads in that text. MONAI reads a
    series from a folder, so each selected series gets a folder of symbolic links to its archived
    files under ``link_dir`` (instance paths in the archive are relative to ``store_dir``).
    """
    from radpair.core.db import make_engine, session_factory
    from radpair.core.inputs import NoSeries, study_inputs
    from radpair.core.models import Patient, Report, Study
    from radpair.core.store import InstanceStore

    store = InstanceStore(store_dir)
    engine = make_engine(database_url)
    link_root = Path(link_dir)
    studies = []
    with session_factory(engine)() as session:
        paired = session.execute(
            select(Study.id, Study.study_uid, Patient.patient_id).join(Patient, Patient.id == Study.patient_pk)
            .where(Study.id.in_(select(Report.study_pk).where(Report.study_pk.is_not(None))))
            .order_by(Study.id)
        ).all()
        for study_pk, study_uid, patient_id in paired:
            inputs = study_inputs(session, study_pk, store, task)
            if isinstance(inputs, NoSeries):
                continue
            folder = link_root / inputs.series.series_uid
            folder.mkdir(parents=True, exist_ok=True)
            for i, path in enumerate(inputs.paths):
                link = folder / f"{i:05d}.dcm"
                if not link.exists():
                    link.symlink_to(store.absolute(path).resolve())
            studies.append(PairedStudy(study_uid, patient_id, folder, inputs.report,
                                       location_index=task.location_index(task.location_of(inputs.report))))
    engine.dispose()
    return studies


def patient_folds(studies: Sequence[PairedStudy], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """k (train, test) index splits, stratified by label (lesion-free studies a stratum of their
    own), grouped by patient."""
    labels = [s.label_index if s.label_index >= 0 else -1 - (s.lesion == 0) for s in studies]
    groups = [s.patient_id for s in studies]
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr.tolist(), te.tolist()) for tr, te in splitter.split(np.zeros(len(studies)), labels, groups)]


def volume_dataset(
    studies: Sequence[PairedStudy],
    params: PreprocessParams,
    with_masks: bool = False,
    cache_dir: str = "",
    cache: bool = True,
    workers: int | None = None,
) -> Dataset:
    """Items: ``image`` [1, D, H, W] (+ ``mask``), ``report``, ``label``, ``lesion``, ``location``, ``index``.

    ``workers``: threads that fill the in-memory cache (None: one per CPU).
    """
    items = []
    for i, s in enumerate(studies):
        item = {"image": str(s.series_dir), "report": s.report, "label": s.label_index, "lesion": s.lesion,
                "location": s.location_index, "index": i}
        if with_masks:
            if s.mask_path is None:
                raise ValueError(f"study {s.study_uid} has no mask; masks are needed for explainability")
            item["mask"] = str(s.mask_path)
        items.append(item)
    keys = ["image", "mask"] if with_masks else ["image"]
    # Plain tensors: cached (on-disk) and fresh items then collate alike; training needs no metadata.
    # Flat: MONAI's caching datasets cache up to the first Randomizable, and a nested Compose is one.
    transforms = Compose([*build_paired_transforms(params, "image", keys[1:]).flatten().transforms,
                          EnsureTyped(keys=keys, track_meta=False)])
    if not cache:
        return Dataset(items, transforms)
    if cache_dir:
        return PersistentDataset(items, transforms, cache_dir=Path(cache_dir) / _params_key(params, with_masks))
    return CacheDataset(items, transforms, progress=len(items) > 20, num_workers=workers)


def _params_key(params: PreprocessParams, with_masks: bool) -> str:
    return re.sub(r"[^0-9a-z]+", "-", json.dumps(params.to_dict(), sort_keys=True).lower()).strip("-") + ("-m" if with_masks else "")
