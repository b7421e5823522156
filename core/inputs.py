"""What a task reads from an archived study — its series and its report text — for training and serving alike.

:func:`study_inputs` is the one function both call: training's archive data set and the pipeline's
inference job. It describes the study's series (:func:`describe_series`: counts by SQL, geometry
from one file header per series), picks one with the task's input rule (:func:`select_series`) and
reads the report text by the task's report policy. So a study with a localiser, two sequences and
two reports is trained on and served on the same series and the same text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from radpair.core.models import Instance, Report, Series
from radpair.core.store import InstanceStore
from radpair.core.task import InputDef, TaskDefinition


@dataclass(frozen=True)
class SeriesInfo:
    """What the input rule looks at for one series of a study."""

    pk: int
    series_uid: str
    series_number: int | None
    modality: str
    body_part: str
    description: str
    instance_count: int
    # "axial" | "sagittal" | "coronal" | "oblique" | "" (no geometry, e.g. an SR).
    orientation: str
    image_type: tuple[str, ...]


@dataclass(frozen=True)
class StudyInputs:
    series: SeriesInfo
    # Instance files of the series, relative to the instance store, sorted.
    paths: list[str]
    # The task's report text of the study ("" when the study has no report).
    report: str


@dataclass(frozen=True)
class NoSeries:
    """No series passed the rule; ``reason`` says what the closest one failed."""

    reason: str


def orientation_of(image_orientation: list[float] | None) -> str:
    """Name the acquisition plane from ImageOrientationPatient (the slice normal's main axis)."""
    import numpy as np

    if not image_orientation or len(image_orientation) != 6:
        return ""
    row, col = np.asarray(image_orientation[:3], float), np.asarray(image_orientation[3:], float)
    normal = np.abs(np.cross(row, col))
    if normal.max() < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[int(normal.argmax())]


def _search(pattern: str, value: str) -> bool:
    return not pattern or re.search(pattern, value, re.IGNORECASE) is not None


def mismatches(rule: InputDef, series: SeriesInfo) -> list[str]:
    """The criteria of ``rule`` that ``series`` fails, as short human-readable phrases."""
    failed = []
    if rule.modality and series.modality.upper() != rule.modality.upper():
        failed.append(f"modality {series.modality or '-'} != {rule.modality}")
    if not _search(rule.body_part, series.body_part):
        failed.append(f"body part {series.body_part or '-'!r} !~ {rule.body_part!r}")
    if not _search(rule.series_description, series.description):
        failed.append(f"series description {series.description!r} !~ {rule.series_description!r}")
    excluded = sorted({v.upper() for v in series.image_type} & {v.upper() for v in rule.exclude_image_types})
    if excluded:
        failed.append(f"image type {'/'.join(excluded)}")
    if rule.orientation != "any" and series.orientation != rule.orientation:
        failed.append(f"orientation {series.orientation or '-'} != {rule.orientation}")
    if series.instance_count < rule.min_instances:
        failed.append(f"{series.instance_count} instances < {rule.min_instances}")
    return failed


def select_series(rule: InputDef, series: list[SeriesInfo]) -> SeriesInfo | NoSeries:
    """The series to analyse: of those passing every criterion, the most instances (ties: the
    lowest series number); else why none passed."""
    if not series:
        return NoSeries("study has no series")
    matching = [s for s in series if not mismatches(rule, s)]
    if matching:
        return max(matching, key=lambda s: (s.instance_count, -(s.series_number or 0), -s.pk))
    closest = min(series, key=lambda s: len(mismatches(rule, s)))
    name = closest.series_number if closest.series_number is not None else closest.series_uid
    return NoSeries(f"no series fits the input rule (series {name}: " + "; ".join(mismatches(rule, closest)) + ")")


def study_inputs(session: Session, study_pk: int, store: InstanceStore, task: TaskDefinition) -> StudyInputs | NoSeries:
    """The series the task analyses in this study, its files, and the report text the task reads."""
    chosen = select_series(task.input, describe_series(session, study_pk, store))
    if isinstance(chosen, NoSeries):
        return chosen
    return inputs_of(session, study_pk, chosen, task)


def inputs_of(session: Session, study_pk: int, chosen: SeriesInfo, task: TaskDefinition) -> StudyInputs:
    """The chosen series' files and the study's report text, by SQL alone (no file is read)."""
    reports = session.execute(select(Report.text, Report.sections).where(Report.study_pk == study_pk)
                              .order_by(Report.received_at, Report.id)).all()
    text = task.report_text([(t, json.loads(sections or "{}")) for t, sections in reports]) if reports else ""
    paths = sorted(session.scalars(select(Instance.path).where(Instance.series_pk == chosen.pk)))
    return StudyInputs(chosen, paths, text)


def describe_series(session: Session, study_pk: int, store: InstanceStore) -> list[SeriesInfo]:
    """Every series of a study from the archive: counts by SQL, geometry from one file header each."""
    return describe(series_rows(session, study_pk), store)


def series_rows(session: Session, study_pk: int) -> list[tuple[Series, int, str]]:
    """The study's series with their instance counts and one file each, by SQL alone: a caller
    that must not hold a transaction while files are read closes its session, then :func:`describe`."""
    return [tuple(row) for row in session.execute(
        select(Series, func.count(Instance.id), func.min(Instance.path))
        .join(Instance, Instance.series_pk == Series.id)
        .where(Series.study_pk == study_pk).group_by(Series.id).order_by(Series.id)
    ).all()]


def describe(rows: list[tuple[Series, int, str]], store: InstanceStore) -> list[SeriesInfo]:
    """:class:`SeriesInfo` of :func:`series_rows`, reading one file header per series (no SQL)."""
    infos = []
    for series, count, path in rows:
        orientation, image_type = _header_facts(store.absolute(path))
        infos.append(SeriesInfo(
            pk=series.id, series_uid=series.series_uid, series_number=series.series_number,
            modality=series.modality, body_part=series.body_part, description=series.description,
            instance_count=int(count), orientation=orientation, image_type=image_type,
        ))
    return infos


def _header_facts(path: Path) -> tuple[str, tuple[str, ...]]:
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ImageOrientationPatient", "ImageType"])
    except (OSError, pydicom.errors.InvalidDicomError):
        return "", ()
    iop = ds.get("ImageOrientationPatient")
    image_type = ds.get("ImageType")
    values = tuple(str(v) for v in image_type) if image_type else ()
    return orientation_of([float(v) for v in iop] if iop else None), values
