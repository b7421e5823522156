"""The data of a retraining run: the archive's pairs as they were at its start, and the held-out set.

* **Snapshot** — the archive's image–report pairs at the start of the run (training's archive data
  set: studies with a selected series and a paired report), each with its label from the
  ``labels`` table when one was imported, and a SHA-256 over every pair's instance checksums,
  report text and label: same hash, same training data.
* **Held-out set** — chosen once, at the first run, among the labelled studies, by patient and
  stratified by class, and stored in ``held_out_studies``. Later runs never train on those
  patients (new studies of a held-out patient are excluded too) and evaluate every candidate, and
  the serving version, on exactly these studies.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.models import (
    HeldOutStudy,
    Instance,
    Label,
    ModelVersion,
    Patient,
    Series,
    Study,
)
from radpair.core.task import TaskDefinition
from radpair.training.data import PairedStudy, patient_folds, studies_from_archive

log = logging.getLogger(__name__)

QUERY_CHUNK = 500


class NotEnoughData(RuntimeError):
    """The archive cannot support a run yet (no labelled studies to hold out, one class only, ...)."""


@dataclass(frozen=True)
class Snapshot:
    """The pairs a run trains and evaluates on, as they were when it started."""

    studies: tuple[PairedStudy, ...]
    sha256: str

    @property
    def study_uids(self) -> list[str]:
        return [s.study_uid for s in self.studies]

    @property
    def labelled(self) -> int:
        return sum(s.label_index >= 0 for s in self.studies)

    def record(self, held_out: Sequence[str]) -> dict[str, Any]:
        """The JSON stored with the model version (``model_versions.data_snapshot``)."""
        return {"studies": self.study_uids, "sha256": self.sha256, "pairs": len(self.studies),
                "labelled": self.labelled, "held_out": sorted(held_out)}


def take_snapshot(sessions: sessionmaker[Session], database_url: str, store_dir: Path, link_dir: Path,
                  task: TaskDefinition) -> Snapshot:
    """The archive's pairs now (for ``task``), labelled from the ``labels`` table, with their content hash."""
    pairs = studies_from_archive(database_url, store_dir, link_dir, task)
    uids = [p.study_uid for p in pairs]
    keys: dict[str, tuple[str, str]] = {}
    checksums: dict[str, list[str]] = {}
    with sessions() as session:
        labels = session.scalars(select(Label)).all()
        for start in range(0, len(uids), QUERY_CHUNK):  # bounded IN lists, whatever the archive's size
            chunk = uids[start:start + QUERY_CHUNK]
            for uid, accession, patient_id in session.execute(
                    select(Study.study_uid, Study.accession_number, Patient.patient_id)
                    .join(Patient, Patient.id == Study.patient_pk).where(Study.study_uid.in_(chunk))):
                keys[uid] = (accession, patient_id)
            for uid, sha in session.execute(select(Study.study_uid, Instance.sha256)
                                            .join(Series, Series.study_pk == Study.id)
                                            .join(Instance, Instance.series_pk == Series.id)
                                            .where(Study.study_uid.in_(chunk))):
                checksums.setdefault(uid, []).append(sha)
    by_uid = {lab.study_uid: lab.label for lab in labels if lab.study_uid}
    by_accession = {(lab.accession_number, lab.patient_id): lab.label for lab in labels if lab.accession_number}
    labelled = []
    digest = hashlib.sha256()
    for pair in sorted(pairs, key=lambda p: p.study_uid):
        accession, patient_id = keys[pair.study_uid]
        label = by_uid.get(pair.study_uid) or by_accession.get((accession, patient_id)) or by_accession.get((accession, ""), "")
        labelled.append(dataclasses.replace(pair, label_index=task.class_index(label), lesion=task.lesion_of(label)))
        digest.update(json.dumps([pair.study_uid, sorted(checksums.get(pair.study_uid, [])),
                                  hashlib.sha256(pair.report.encode()).hexdigest(), label]).encode())
    return Snapshot(tuple(labelled), digest.hexdigest())


def new_pair_count(sessions: sessionmaker[Session], model_name: str, snapshot: Snapshot) -> int:
    """Pairs in the snapshot that the last candidate (promoted or not) did not have."""
    with sessions() as session:
        last = session.scalars(select(ModelVersion).where(ModelVersion.model_name == model_name)
                               .order_by(ModelVersion.id.desc()).limit(1)).first()
        previous = set(json.loads(last.data_snapshot).get("studies", [])) if last else set()
    return len(set(snapshot.study_uids) - previous)


def fix_held_out(sessions: sessionmaker[Session], snapshot: Snapshot, fraction: float, seed: int, run_id: int) -> set[str]:
    """The held-out study UIDs: stored ones, else chosen now (by patient, stratified) and stored."""
    with sessions() as session:
        stored = set(session.scalars(select(Study.study_uid).join(HeldOutStudy, HeldOutStudy.study_pk == Study.id)))
    if stored:
        return stored
    labelled = [s for s in snapshot.studies if s.label_index >= 0]
    classes = {s.label_index for s in labelled}
    folds = max(2, round(1 / fraction))
    patients = {s.patient_id for s in labelled}
    if len(classes) < 2 or len(patients) < 2 * folds:
        raise NotEnoughData(f"the held-out set needs labelled studies of two classes or more from at least {2 * folds} "
                            f"patients; the archive has {len(labelled)} labelled studies of {len(patients)} patients "
                            f"and {len(classes)} class(es) (`radpair labels import`)")
    _, test = patient_folds(labelled, folds, seed)[0]
    chosen = {labelled[i].study_uid for i in test}
    with sessions.begin() as session:
        pks = session.scalars(select(Study.id).where(Study.study_uid.in_(chosen))).all()
        session.add_all(HeldOutStudy(study_pk=pk, retrain_run_pk=run_id) for pk in pks)
    log.info("retrain: held-out set fixed: %d studies of %d patients", len(chosen),
             len({s.patient_id for s in labelled if s.study_uid in chosen}))
    return chosen


def split(snapshot: Snapshot, held_out: set[str]) -> tuple[list[PairedStudy], list[PairedStudy]]:
    """(training pairs, held-out pairs): every study of a held-out patient stays out of training."""
    held_patients = {s.patient_id for s in snapshot.studies if s.study_uid in held_out}
    train = [s for s in snapshot.studies if s.patient_id not in held_patients]
    evaluation = [s for s in snapshot.studies if s.study_uid in held_out]
    return train, evaluation
