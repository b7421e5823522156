"""Retraining's training half: snapshot the archive, fix the held-out set, train, evaluate, gate.

Nothing here talks to Triton; :mod:`radpair.retrain` composes these steps with the export and the
hot swap. Every step is recorded so a model version can be traced back to its data:

* **Snapshot** — the archive's image–report pairs at the start of the run (training's archive data
  set: studies with a selected MR series and a paired report), each with its label from the
  ``labels`` table when one was imported, and a SHA-256 over every pair's instance checksums,
  report text and label: same hash, same training data.
* **Held-out set** — chosen once, at the first run, among the labelled studies, by patient and
  stratified by class, and stored in ``held_out_studies``. Later runs never train on those
  patients (new studies of a held-out patient are excluded too) and evaluate every candidate, and
  the serving version, on exactly these studies.
* **Gate** — promote when the candidate's primary metric is at most ``tolerance`` below the
  serving version's on the held-out set and its exported artifact passes the sanity checks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from tqdm import tqdm

from core.models import HeldOutStudy, Instance, Label, ModelVersion, Patient, Series, Study
from core.preprocess import PreprocessParams
from training.config import TrainConfig
from training.data import CLASS_NAMES, PairedStudy, patient_folds, studies_from_archive, volume_dataset
from training.evaluate import classification_metrics
from training.finetune import finetune
from training.pretrain import pretrain

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


def take_snapshot(sessions: sessionmaker[Session], database_url: str, store_dir: Path, link_dir: Path) -> Snapshot:
    """The archive's pairs now, labelled from the ``labels`` table, with their content hash."""
    pairs = studies_from_archive(database_url, store_dir, link_dir)
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
        index = CLASS_NAMES.index(label) if label in CLASS_NAMES else -1
        labelled.append(dataclasses.replace(pair, label_index=index))
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
        raise NotEnoughData(f"the held-out set needs labelled studies of both classes from at least {2 * folds} "
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


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    # Sanity problems of the artifact's outputs (empty: fine).
    problems: list[str]


def evaluate_artifact(model_pt: Path, params: PreprocessParams, studies: Sequence[PairedStudy],
                      batch_size: int = 4) -> Evaluation:
    """Held-out metrics of an exported TorchScript model — the exact artifact Triton would serve.

    Scored with training's own metrics (AUC of the class-1 probability; precision, recall, F1 of
    the argmax). Attention Dice needs ground-truth lesion masks, which an archive does not have
    (studies from a PACS come without them), so it is reported as ``null`` with the reason. Sanity: probabilities finite, in
    [0, 1] and summing to 1; attention finite and in [0, 1]; embeddings finite.
    """
    model = torch.jit.load(str(model_pt), map_location="cpu").eval()
    data = volume_dataset(studies, params, cache=False)
    probabilities, labels, problems = [], [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(studies), batch_size), desc="held-out", unit="batch", leave=False):
            items = [data[i] for i in range(start, min(start + batch_size, len(studies)))]
            x = torch.stack([torch.as_tensor(item["image"]) for item in items]).float()
            probs, attention, embedding = model(x)
            problems += _sanity(probs, attention, embedding)
            probabilities.append(probs.numpy())
            labels += [int(item["label"]) for item in items]
    p = np.concatenate(probabilities)
    y = np.asarray(labels)
    metrics: dict[str, Any] = {"n": int(len(y)), "attention_dice": None,
                               "attention_dice_note": "no ground-truth lesion masks in the archive"}
    if not np.isfinite(p).all():  # the sanity problems say why; there is nothing to score
        return Evaluation({**metrics, "auc": None, "f1": None, "accuracy": None}, sorted(set(problems)))
    scored = classification_metrics(y.tolist(), p.tolist())
    metrics.update({k: None if math.isnan(v) else v for k, v in scored.items()})
    metrics["accuracy"] = float((p.argmax(1) == y).mean())
    return Evaluation(metrics, sorted(set(problems)))


def train_candidate(config: TrainConfig, studies: Sequence[PairedStudy], out: Path) -> Path:
    """Pre-train on every training pair (labelled or not), then fine-tune from it on the labelled
    ones; returns the fine-tuning run directory (what the exporter reads)."""
    pretrain(config, studies, out / "pretrain")
    finetune(config, [s for s in studies if s.label_index >= 0], out / "finetune", init=str(out / "pretrain"))
    return out / "finetune"


def _sanity(probs: torch.Tensor, attention: torch.Tensor, embedding: torch.Tensor) -> list[str]:
    problems = []
    if not torch.isfinite(probs).all():
        problems.append("probabilities are not finite")
    elif probs.min() < 0 or probs.max() > 1 or not torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-4):
        problems.append("probabilities are outside [0, 1] or do not sum to 1")
    if not torch.isfinite(attention).all() or attention.min() < 0 or attention.max() > 1:
        problems.append("attention is not finite or outside [0, 1]")
    if not torch.isfinite(embedding).all():
        problems.append("embeddings are not finite")
    return problems


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def gate(candidate: Evaluation, serving: Mapping[str, Any] | None, primary_metric: str, tolerance: float) -> GateDecision:
    """Promote when sane and ``candidate >= serving - tolerance`` on the primary metric."""
    if candidate.problems:
        return GateDecision(False, "sanity check failed: " + "; ".join(candidate.problems))
    value = candidate.metrics.get(primary_metric)
    if value is None or math.isnan(value):
        return GateDecision(False, f"{primary_metric} is undefined on the held-out set")
    reference = None if serving is None else serving.get(primary_metric)
    if reference is None:
        return GateDecision(True, f"{primary_metric} {value:.3f}; no serving version to compare with")
    verdict = value >= reference - tolerance
    return GateDecision(verdict, f"{primary_metric} {value:.3f} {'>=' if verdict else '<'} serving "
                                 f"{reference:.3f} - tolerance {tolerance:g}")
