"""Paired image–report data sets (cohort folder or archive), patient-level splits, caching.

Both sources give :class:`PairedStudy` records. Volumes go through the shared preprocessing
(``core.preprocess``) once and are cached (MONAI ``CacheDataset`` in memory, or
``PersistentDataset`` on disk), so epochs after the first never re-read DICOM; augmentation is
applied afterwards on tensors (:func:`augment`), from an explicit generator for reproducibility.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose, EnsureTyped
from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold
from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from core.preprocess import PreprocessParams, build_paired_transforms
from training.cohort import CLASS_NAMES, LOCATIONS, read_cohort

# Lesion-free or unknown location: a location value of its own.
NO_LOCATION_INDEX = len(LOCATIONS)


@dataclass(frozen=True)
class PairedStudy:
    study_uid: str
    patient_id: str
    series_dir: Path
    report: str
    label_index: int = -1  # 0/1 for CLASS_NAMES, -1 unlabelled
    location_index: int = NO_LOCATION_INDEX
    mask_path: Path | None = None


def location_index(location: str) -> int:
    return LOCATIONS.index(location) if location in LOCATIONS else NO_LOCATION_INDEX


def studies_from_cohort(folder: str | Path) -> list[PairedStudy]:
    """A folder written by ``radpair cohort``, read through COHORT's ``read_cohort``."""
    return [
        PairedStudy(
            study_uid=s.study_uid,
            patient_id=s.patient_id,
            series_dir=Path(s.series_dir),
            report=s.report_text,
            label_index=int(s.label_index),
            location_index=location_index(s.location),
            mask_path=Path(s.mask_path) if s.mask_path else None,
        )
        for s in read_cohort(Path(folder))
    ]


_LOCATION_WORDS = {
    "transtentorial": 2,
    "infratentorial": 1, "cerebell": 1, "brainstem": 1, "brain stem": 1, "pons": 1, "medulla": 1, "fourth ventricle": 1,
    "supratentorial": 0, "frontal": 0, "parietal": 0, "temporal": 0, "occipital": 0, "thalam": 0, "basal ganglia": 0,
}


def location_from_report(text: str) -> int:
    """Location class from report wording (the archive has no location column); first rule wins."""
    lowered = text.lower()
    return next((index for word, index in _LOCATION_WORDS.items() if word in lowered), NO_LOCATION_INDEX)


def studies_from_archive(database_url: str, store_dir: str | Path, link_dir: str | Path) -> list[PairedStudy]:
    """Archived studies with an MR series and a paired report (one SQL query, no folder walking).

    The selected series is the study's MR series with the most instances. MONAI reads a series
    from a folder, so each selected series gets a folder of symbolic links to its archived files
    under ``link_dir`` (instance paths in the archive are relative to ``store_dir``).
    """
    from core.db import make_engine, session_factory
    from core.models import Instance, Patient, Report, Series, Study
    from core.store import InstanceStore

    store = InstanceStore(store_dir)

    counts = (
        select(Series.id.label("series_pk"), Series.study_pk, func.count(Instance.id).label("n"))
        .join(Instance, Instance.series_pk == Series.id)
        .where(Series.modality == "MR")
        .group_by(Series.id, Series.study_pk)
        .subquery()
    )
    ranked = select(
        counts.c.series_pk, counts.c.study_pk,
        func.row_number().over(partition_by=counts.c.study_pk, order_by=(counts.c.n.desc(), counts.c.series_pk)).label("rank"),
    ).subquery()
    newer = aliased(Report)
    latest_report = select(func.max(newer.id)).where(newer.study_pk == Study.id).correlate(Study).scalar_subquery()
    query = (
        select(Study.study_uid, Patient.patient_id, Series.series_uid, Report.text, Series.id)
        .join(Patient, Patient.id == Study.patient_pk)
        .join(ranked, (ranked.c.study_pk == Study.id) & (ranked.c.rank == 1))
        .join(Series, Series.id == ranked.c.series_pk)
        .join(Report, Report.id == latest_report)
        .order_by(Study.id)
    )
    engine = make_engine(database_url)
    link_root = Path(link_dir)
    studies = []
    with session_factory(engine)() as session:
        rows = session.execute(query).all()
        paths: dict[int, list[str]] = {}
        for series_pk, path in session.execute(
            select(Instance.series_pk, Instance.path).where(Instance.series_pk.in_([r[4] for r in rows]))
        ):
            paths.setdefault(series_pk, []).append(path)
    for study_uid, patient_id, series_uid, text, series_pk in rows:
        folder = link_root / series_uid
        folder.mkdir(parents=True, exist_ok=True)
        for i, path in enumerate(sorted(paths[series_pk])):
            link = folder / f"{i:05d}.dcm"
            if not link.exists():
                link.symlink_to(store.absolute(path).resolve())
        studies.append(PairedStudy(study_uid, patient_id, folder, text, location_index=location_from_report(text)))
    engine.dispose()
    return studies


def held_out_split(studies: Sequence[PairedStudy], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(development, held-out) indices; no patient is on both sides."""
    idx = list(range(len(studies)))
    if fraction <= 0:
        return idx, []
    groups = [s.patient_id for s in studies]
    dev, held = next(GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed).split(idx, groups=groups))
    return sorted(dev.tolist()), sorted(held.tolist())


def patient_folds(studies: Sequence[PairedStudy], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """k (train, test) index splits, stratified by label, grouped by patient."""
    labels = [s.label_index for s in studies]
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
    """Items: ``image`` [1, D, H, W] (+ ``mask``), ``report``, ``label``, ``location``, ``index``.

    ``workers``: threads that fill the in-memory cache (None: one per CPU).
    """
    items = []
    for i, s in enumerate(studies):
        item = {"image": str(s.series_dir), "report": s.report, "label": s.label_index,
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


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-volume random intensity scale/shift, Gaussian noise and a small translation.

    Applied to batches of cached tensors on the training device: cheap, and reproducible through
    ``generator``. No flips: left/right is part of a report's description.
    """
    b = x.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(x.device)  # noqa: E731
    scale = 0.9 + 0.2 * rand(b, 1, 1, 1, 1)
    shift = 0.2 * (rand(b, 1, 1, 1, 1) - 0.5)
    noise = 0.05 * torch.randn(x.shape, generator=generator).to(x.device)
    out = x * scale + shift + noise
    shifts = (torch.randint(-3, 4, (b, 3), generator=generator)).tolist()
    return torch.stack([torch.roll(v, shifts=tuple(s), dims=(1, 2, 3)) for v, s in zip(out, shifts)])
