"""Write a synthetic cohort folder: per study an MR series, an SR report and a lesion mask, plus
labels.csv, reports.jsonl and manifest.json (layout in :mod:`training.cohort`).

Everything is a function of (seed, shift, study index): each study has its own RNG streams, its
UIDs are name-based UUIDs of the same triple under the 2.25 root, and dates are drawn, never read from
the clock. So a seed reproduces a cohort byte for byte, in any number of worker processes, and
two seeds (or two shifts of one seed) never share a UID.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import logging
import multiprocessing
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from radpair.core.task import TaskDefinition
from radpair.training.cohort import (
    DEFAULT_SIZE,
    GENERATOR_VERSION,
    LABEL_COLUMNS,
    NO_LOCATION,
)
from radpair.training.cohort.dicom_writer import (
    Geometry,
    StudyInfo,
    write_mask,
    write_mr_series,
    write_report_sr,
)
from radpair.training.cohort.lesions import paint_lesion, sample_lesion
from radpair.training.cohort.phantom import Head, bias_field, rician
from radpair.training.cohort.reports import (
    Measurement,
    lesion_report,
    normal_report,
    report_text,
)
from radpair.training.cohort.shifts import Shift

log = logging.getLogger(__name__)

_FAMILY = ("Tremblay", "Nguyen", "Okafor", "Silva", "Kowalski", "Haddad", "Chen", "Murphy", "Singh", "Rossi",
           "Lindqvist", "Mensah", "Novak", "Garcia", "Sato", "Fraser", "Dubois", "Ali", "Petrov", "Walker")
_GIVEN = {"F": ("Ava", "Maya", "Zoe", "Amira", "Lea", "Nora", "Ines", "Sofia", "Chloe", "Yuna"),
          "M": ("Liam", "Noah", "Omar", "Lucas", "Ethan", "Kai", "Mateo", "Arjun", "Felix", "Theo")}
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/radpair/radpair/cohort")
_RADIOLOGISTS = ("Referring^Anna", "Referring^Ben", "Referring^Carla", "Referring^David")


@dataclass(frozen=True)
class CohortSpec:
    out: Path
    n: int
    seed: int
    shift: Shift
    # The task whose cases are drawn (its [cohort] section: locations, sites, class priors and looks).
    task: TaskDefinition
    size: tuple[int, int, int] = DEFAULT_SIZE
    lesion_free_fraction: float = 0.1


def _key(spec: CohortSpec, index: int) -> list[int]:
    digest = hashlib.sha256(f"{spec.seed}/{spec.shift.name}/{index}".encode()).digest()
    return [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]


def _uid(spec: CohortSpec, index: int, role: str) -> str:
    """A UUID-derived UID (PS3.5 B.2) from a name-based (SHA-1, version 5) UUID of the study key."""
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, f'{spec.seed}/{spec.shift.name}/{index}/{role}').int}"


def _study_info(spec: CohortSpec, index: int, rng: np.random.Generator) -> StudyInfo:
    digits = int(hashlib.sha256(f"{spec.seed}/{spec.shift.name}/{index}".encode()).hexdigest(), 16)
    first, last = spec.shift.years
    date = dt.date(first, 1, 1) + dt.timedelta(days=int(rng.integers((dt.date(last, 12, 31) - dt.date(first, 1, 1)).days)))
    age_days = int(rng.integers(365, 18 * 365))
    sex = "F" if rng.random() < 0.5 else "M"
    seconds = int(rng.integers(7 * 3600, 19 * 3600))
    return StudyInfo(
        patient_id=f"RP{digits % 10**9:09d}",
        patient_name=f"{_FAMILY[int(rng.integers(len(_FAMILY)))]}^{_GIVEN[sex][int(rng.integers(10))]}",
        birth_date=(date - dt.timedelta(days=age_days)).strftime("%Y%m%d"),
        sex=sex,
        age=f"{age_days // 365:03d}Y",
        study_uid=_uid(spec, index, "study"),
        accession=f"A{(digits >> 40) % 10**10:010d}",
        study_id=f"{(digits >> 80) % 10**6:06d}",
        date=date.strftime("%Y%m%d"),
        time=f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}",
        referring=_RADIOLOGISTS[int(rng.integers(len(_RADIOLOGISTS)))],
    )


def _measure(points: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]) -> Measurement:
    """Extents of the mask along the patient axes, as a radiologist's calipers would read them."""
    inside = points[mask]
    step = min(spacing)
    extent = inside.max(axis=0) - inside.min(axis=0) + step
    return Measurement(transverse=float(extent[0]), anteroposterior=float(extent[1]), craniocaudal=float(extent[2]))


def generate_study(spec: CohortSpec, index: int) -> tuple[dict, dict]:
    """Write study ``index`` of the cohort; returns its labels.csv row and reports.jsonl record."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(_key(spec, index)).spawn(5)]
    label_rng, anatomy_rng, texture_rng, noise_rng, report_rng = streams
    shift = spec.shift
    info = _study_info(spec, index, label_rng)
    has_lesion = label_rng.random() >= spec.lesion_free_fraction
    lesion = sample_lesion(label_rng, spec.task) if has_lesion else None

    geometry = Geometry.axial(spec.size, shift)
    points = geometry.points()
    head = Head.sample(anatomy_rng, int(info.age[:3]))
    q = head.to_subject(points)
    width = 0.5 * min(geometry.spacing) / head.scale
    image, brain = head.render(q, width)
    mask = np.zeros(spec.size, dtype=bool)
    if lesion is not None:
        mask = paint_lesion(image, brain, q, lesion, texture_rng, width)
    image *= bias_field(q, anatomy_rng, shift.bias_strength)
    image = rician(image, noise_rng, shift.noise_sigma)
    pixels = np.clip(shift.intensity_scale * np.power(image, shift.gamma), 0, 4095).astype(np.uint16)

    voxel_mm3 = float(np.prod(geometry.spacing))
    volume_mm3 = float(mask.sum()) * voxel_mm3
    leak_terms = spec.task.report.leak_terms
    if lesion is None:
        sections = normal_report(shift.report_style, report_rng, leak_terms)
    else:
        sections = lesion_report(lesion, _measure(points, mask, geometry.spacing), volume_mm3, shift.report_style,
                                 report_rng, leak_terms)

    folder = Path(info.patient_id) / info.accession
    root = spec.out / folder
    evidence = write_mr_series(root / "MR", pixels, geometry, info, shift, _uid(spec, index, "mr-series"),
                               _uid(spec, index, "frame"), [_uid(spec, index, f"mr-{k}") for k in range(spec.size[0])])
    write_report_sr(root / "SR" / "report.dcm", sections, evidence, info, _uid(spec, index, "sr-series"),
                    _uid(spec, index, "sr"), shift)
    write_mask(root / "mask.nii.gz", mask, geometry)
    row = {
        "patient_id": info.patient_id, "study_uid": info.study_uid, "accession_number": info.accession,
        "label": lesion.label if lesion else spec.task.finding.absent_label,
        "label_index": lesion.label_index if lesion else -1,
        "location": lesion.location if lesion else NO_LOCATION, "site": lesion.site if lesion else "",
        "has_lesion": int(has_lesion), "lesion_volume_mm3": round(volume_mm3, 1),
        "series_dir": str(folder / "MR"), "report_path": str(folder / "SR" / "report.dcm"),
        "mask_path": str(folder / "mask.nii.gz"),
    }
    record = {"patient_id": info.patient_id, "study_uid": info.study_uid, "accession_number": info.accession,
              "text": report_text(sections), "sections": sections}
    return row, record


def _generate_one(job: tuple[CohortSpec, int]) -> tuple[dict, dict]:
    return generate_study(*job)


def generate_cohort(spec: CohortSpec, workers: int = 2) -> dict:
    """Write the whole cohort under ``spec.out`` (which must be empty or absent); returns the manifest."""
    if spec.out.exists() and any(spec.out.iterdir()):
        raise FileExistsError(f"{spec.out} is not empty; choose a new --out folder")
    spec.out.mkdir(parents=True, exist_ok=True)
    jobs = [(spec, index) for index in range(spec.n)]
    progress = dict(total=spec.n, unit="study", desc=f"cohort seed {spec.seed} shift {spec.shift.name}")
    if workers > 1 and spec.n > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = list(tqdm(pool.imap(_generate_one, jobs, chunksize=2), **progress))
    else:
        results = [_generate_one(job) for job in tqdm(jobs, **progress)]
    with open(spec.out / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LABEL_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(row for row, _ in results)
    with open(spec.out / "reports.jsonl", "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(record, sort_keys=True) + "\n" for _, record in results)
    rows = [row for row, _ in results]
    manifest = {
        "generator": "radpair cohort", "version": GENERATOR_VERSION, "seed": spec.seed, "n": spec.n,
        "size": list(spec.size), "lesion_free_fraction": spec.lesion_free_fraction, "shift": spec.shift.to_dict(),
        "task": spec.task.name,
        "priors": {"location": {c.location: c.prior for c in spec.task.cohort.locations},
                   "class_given_location": {c.name: c.prior for c in spec.task.cohort.classes}},
        "counts": {
            "studies": len(rows), "lesion_free": sum(1 for r in rows if not r["has_lesion"]),
            "label": {name: sum(1 for r in rows if r["label"] == name) for name in sorted({r["label"] for r in rows})},
            "location": {name: sum(1 for r in rows if r["location"] == name) for name in sorted({r["location"] for r in rows})},
        },
    }
    (spec.out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    log.info("cohort: %d studies (seed %d, shift %s) written to %s", spec.n, spec.seed, spec.shift.name, spec.out)
    return manifest
