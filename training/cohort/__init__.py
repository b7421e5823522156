"""Synthetic paired cohort: MR series + SR report + lesion mask per study, and its reader.

``radpair cohort`` (:mod:`training.cohort.generate`) writes a folder; :func:`read_cohort` is the
one way everything else (training, tests, demo) reads it back, so the folder layout is known here:

    DIR/manifest.json, DIR/labels.csv, DIR/reports.jsonl
    DIR/<patient_id>/<accession>/MR/*.dcm        one MR Image Storage file per slice
    DIR/<patient_id>/<accession>/SR/report.dcm   Enhanced SR in the same study
    DIR/<patient_id>/<accession>/mask.nii.gz     lesion mask, same grid as MONAI loads the series
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

NO_LOCATION = "none"
DEFAULT_SIZE = (64, 64, 64)
GENERATOR_VERSION = "2.0"

LABEL_COLUMNS = (
    "patient_id", "study_uid", "accession_number", "label", "label_index", "location", "site",
    "has_lesion", "lesion_volume_mm3", "series_dir", "report_path", "mask_path",
)


@dataclass(frozen=True)
class CohortStudy:
    """One study of a cohort folder; paths are absolute."""

    patient_id: str
    study_uid: str
    accession_number: str
    label: str  # one of the task's classes; its absent label (e.g. "none") when lesion-free
    label_index: int  # index into the task's classes, -1 when lesion-free
    location: str  # one of the task's locations, "none" when lesion-free
    site: str  # e.g. "left frontal lobe", "" when lesion-free
    has_lesion: bool
    lesion_volume_mm3: float
    series_dir: Path
    report_path: Path
    mask_path: Path
    report_text: str
    report_sections: dict[str, str] = field(hash=False, compare=False)


def read_cohort(folder: str | Path) -> list[CohortStudy]:
    """The studies of a folder written by ``radpair cohort``, in labels.csv order."""
    root = Path(folder)
    if not (root / "labels.csv").is_file():
        raise FileNotFoundError(f"{root} is not a cohort folder: labels.csv is missing")
    reports: dict[str, dict] = {}
    with open(root / "reports.jsonl", encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                reports[record["study_uid"]] = record
    studies = []
    with open(root / "labels.csv", newline="", encoding="utf-8") as rows:
        for row in csv.DictReader(rows):
            report = reports[row["study_uid"]]
            studies.append(CohortStudy(
                patient_id=row["patient_id"],
                study_uid=row["study_uid"],
                accession_number=row["accession_number"],
                label=row["label"],
                label_index=int(row["label_index"]),
                location=row["location"],
                site=row["site"],
                has_lesion=row["has_lesion"] == "1",
                lesion_volume_mm3=float(row["lesion_volume_mm3"]),
                series_dir=root / row["series_dir"],
                report_path=root / row["report_path"],
                mask_path=root / row["mask_path"],
                report_text=report["text"],
                report_sections=dict(report["sections"]),
            ))
    return studies
