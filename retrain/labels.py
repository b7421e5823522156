"""Class labels for fine-tuning (``radpair labels import FILE.csv``), from a cohort or a site's list.

The CSV needs a label column and at least one key column; a cohort's ``labels.csv`` and a
pathology export both work. Header names are matched case-insensitively, ignoring ``_``/spaces:

* key: ``study_uid`` / ``StudyInstanceUID``, ``accession_number`` / ``AccessionNumber`` /
  ``accession``, ``patient_id`` / ``PatientID``
* label: ``label`` / ``class`` / ``diagnosis``

A row with an empty label (e.g. a lesion-free study) is skipped. A label that is not one of the
classifier's class names stops the import before anything is written: a typo in a pathology list
must not become training data.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import Label, utcnow


COLUMNS = {
    "study_uid": ("studyuid", "studyinstanceuid"),
    "accession_number": ("accessionnumber", "accession"),
    "patient_id": ("patientid",),
    "label": ("label", "class", "diagnosis"),
}


class LabelFileError(ValueError):
    """The file cannot be imported; the message names the row or column."""


@dataclass(frozen=True)
class ImportSummary:
    added: int
    updated: int
    unchanged: int
    skipped_empty: int


def _column_map(header: Sequence[str]) -> dict[str, str]:
    normalised = {h.lower().replace("_", "").replace(" ", ""): h for h in header}
    found = {key: next((normalised[a] for a in aliases if a in normalised), "") for key, aliases in COLUMNS.items()}
    if not found["label"]:
        raise LabelFileError(f"no label column (one of {', '.join(COLUMNS['label'])}) in header {list(header)}")
    if not any(found[k] for k in ("study_uid", "accession_number", "patient_id")):
        raise LabelFileError(f"no study_uid, accession_number or patient_id column in header {list(header)}")
    return found


def read_label_file(path: Path, class_names: Sequence[str]) -> tuple[list[dict[str, str]], int]:
    """Rows as ``{study_uid, accession_number, patient_id, label}`` and the number of empty labels."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = _column_map(reader.fieldnames or [])
        rows, empty, errors = [], 0, []
        for line, raw in enumerate(reader, start=2):
            row = {key: (raw.get(col) or "").strip() if col else "" for key, col in columns.items()}
            if not row["label"]:
                empty += 1
                continue
            if row["label"] not in class_names:
                errors.append(f"line {line}: label {row['label']!r} is not one of {', '.join(class_names)}")
            elif not (row["study_uid"] or row["accession_number"]):
                errors.append(f"line {line}: neither a study UID nor an accession number")
            else:
                rows.append(row)
    if errors:
        shown = "\n  ".join(errors[:10]) + (f"\n  ... and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise LabelFileError(f"{path}: {len(errors)} bad row(s), nothing imported:\n  {shown}")
    return rows, empty


def import_labels(sessions: sessionmaker[Session], path: Path, class_names: Sequence[str]) -> ImportSummary:
    """Upsert every row (key: study UID + accession + patient ID) in one transaction."""
    rows, empty = read_label_file(path, class_names)
    added = updated = unchanged = 0
    with sessions.begin() as session:
        for row in rows:
            existing = session.scalars(select(Label).where(
                Label.study_uid == row["study_uid"], Label.accession_number == row["accession_number"],
                Label.patient_id == row["patient_id"])).one_or_none()
            if existing is None:
                session.add(Label(**row, source=path.name))
                added += 1
            elif existing.label != row["label"]:
                existing.label, existing.source, existing.imported_at = row["label"], path.name, utcnow()
                updated += 1
            else:
                unchanged += 1
    return ImportSummary(added, updated, unchanged, empty)
