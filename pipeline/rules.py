"""Routing rules: which stable study a model runs on, on which of its series, and where results go.

Rules are data from the settings file (``[[pipeline.rules]]``), never code: a rule is a set of
criteria on a series' DICOM attributes, tried in order. The first rule with at least one matching
series wins, and of its matching series the one with the most instances is analysed (ties: the
lowest series number). A study no rule matches stays archived; :class:`NoMatch` says why, for
``radpair status``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.models import Instance, Series, Study
from core.settings import RoutingRuleSettings
from core.store import InstanceStore


@dataclass(frozen=True)
class SeriesInfo:
    """What the rules look at for one series of a study."""

    series_uid: str
    series_number: int | None
    modality: str
    body_part: str
    description: str
    study_description: str
    sop_class_uids: frozenset[str]
    calling_aes: frozenset[str]
    instance_count: int
    # "axial" | "sagittal" | "coronal" | "oblique" | "" (no geometry, e.g. an SR).
    orientation: str


@dataclass(frozen=True)
class Route:
    rule: RoutingRuleSettings
    series: SeriesInfo


@dataclass(frozen=True)
class NoMatch:
    reason: str


def orientation_of(image_orientation: list[float] | None) -> str:
    """Name the acquisition plane from ImageOrientationPatient (the slice normal's main axis)."""
    if not image_orientation or len(image_orientation) != 6:
        return ""
    row, col = np.asarray(image_orientation[:3], float), np.asarray(image_orientation[3:], float)
    normal = np.abs(np.cross(row, col))
    if normal.max() < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[int(normal.argmax())]


def _search(pattern: str, value: str) -> bool:
    return not pattern or re.search(pattern, value, re.IGNORECASE) is not None


def mismatches(rule: RoutingRuleSettings, series: SeriesInfo) -> list[str]:
    """The criteria of ``rule`` that ``series`` fails, as short human-readable phrases."""
    failed = []
    if rule.modality and series.modality.upper() != rule.modality.upper():
        failed.append(f"modality {series.modality or '-'} != {rule.modality}")
    if not _search(rule.body_part, series.body_part):
        failed.append(f"body part {series.body_part or '-'!r} !~ {rule.body_part!r}")
    if not _search(rule.series_description, series.description):
        failed.append(f"series description {series.description!r} !~ {rule.series_description!r}")
    if not _search(rule.study_description, series.study_description):
        failed.append(f"study description {series.study_description!r} !~ {rule.study_description!r}")
    if rule.sop_class_uid and rule.sop_class_uid not in series.sop_class_uids:
        failed.append(f"no instance of SOP class {rule.sop_class_uid}")
    if rule.calling_ae and not any(_search(rule.calling_ae, ae) for ae in series.calling_aes):
        failed.append(f"calling AE {'/'.join(sorted(series.calling_aes)) or '-'} !~ {rule.calling_ae!r}")
    if rule.orientation != "any" and series.orientation != rule.orientation:
        failed.append(f"orientation {series.orientation or '-'} != {rule.orientation}")
    if series.instance_count < rule.min_instances:
        failed.append(f"{series.instance_count} instances < {rule.min_instances}")
    return failed


def route(rules: list[RoutingRuleSettings], series: list[SeriesInfo]) -> Route | NoMatch:
    """Pick the rule and the series to analyse, or say why nothing matched."""
    if not rules:
        return NoMatch("no routing rules configured")
    if not series:
        return NoMatch("study has no series")
    reasons = []
    for rule in rules:
        matching = [s for s in series if not mismatches(rule, s)]
        if matching:
            best = max(matching, key=lambda s: (s.instance_count, -(s.series_number or 0)))
            return Route(rule, best)
        closest = min(series, key=lambda s: len(mismatches(rule, s)))
        reasons.append(f"rule {rule.name!r}: " + "; ".join(mismatches(rule, closest)))
    return NoMatch("no rule matched (" + " | ".join(reasons) + ")")


def study_series(session: Session, study: Study, store: InstanceStore) -> list[SeriesInfo]:
    """Describe every series of ``study`` from the archive (one file header read per series)."""
    infos = []
    for series in session.scalars(select(Series).where(Series.study_pk == study.id).order_by(Series.id)):
        instances = session.scalars(select(Instance).where(Instance.series_pk == series.id)).all()
        if not instances:
            continue
        infos.append(SeriesInfo(
            series_uid=series.series_uid,
            series_number=series.series_number,
            modality=series.modality,
            body_part=series.body_part,
            description=series.description,
            study_description=study.description,
            sop_class_uids=frozenset(i.sop_class_uid for i in instances),
            calling_aes=frozenset(i.calling_ae for i in instances if i.calling_ae),
            instance_count=len(instances),
            orientation=_series_orientation(store.absolute(instances[0].path)),
        ))
    return infos


def _series_orientation(path: Path) -> str:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ImageOrientationPatient"])
    except (OSError, pydicom.errors.InvalidDicomError):
        return ""
    iop = ds.get("ImageOrientationPatient")
    return orientation_of([float(v) for v in iop] if iop else None)
