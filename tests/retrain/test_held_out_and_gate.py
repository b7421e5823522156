"""The held-out set (fixed at the first run, patient-level, stratified, stored), new-pair counting,
and the gate's decisions, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from radpair.core.models import ModelVersion, Patient, Study
from radpair.retrain.gate import Evaluation, gate
from radpair.retrain.lock import acquire, release
from radpair.retrain.snapshot import NotEnoughData, Snapshot, fix_held_out, new_pair_count, split
from radpair.training.data import PairedStudy


def pair(patient: int, study: int, label: int) -> PairedStudy:
    return PairedStudy(study_uid=f"1.2.{patient}.{study}", patient_id=f"P{patient}", series_dir=Path("/nonexistent"),
                       report="report", label_index=label)


def archive(sessions, pairs: list[PairedStudy]) -> None:
    with sessions.begin() as session:
        patients = {p.patient_id: p for p in session.scalars(select(Patient))}
        for p in pairs:
            patient = patients.setdefault(p.patient_id, Patient(patient_id=p.patient_id))
            session.add(Study(study_uid=p.study_uid, patient=patient))


def run_row(sessions) -> int:
    run_id = acquire(sessions, "manual", lease=60)
    release(sessions, run_id, "skipped", "test")
    return run_id


def test_held_out_is_patient_level_stratified_and_fixed(sessions) -> None:
    # 12 patients, two studies each (one unlabelled), classes alternating.
    first = [pair(p, s, p % 2 if s == 0 else -1) for p in range(12) for s in range(2)]
    archive(sessions, first)
    held = fix_held_out(sessions, Snapshot(tuple(first), "x"), fraction=0.25, seed=0, run_id=run_row(sessions))
    held_pairs = [p for p in first if p.study_uid in held]
    assert {p.label_index for p in held_pairs} == {0, 1}, "both classes are held out"
    assert all(p.label_index >= 0 for p in held_pairs)
    assert 2 <= len({p.patient_id for p in held_pairs}) <= 4

    # A later run: more studies, including a new one of a held-out patient. The set does not move,
    # and no study of a held-out patient is trained on.
    held_patient = held_pairs[0].patient_id
    newcomer = PairedStudy(study_uid="1.2.99.9", patient_id=held_patient, series_dir=Path("/x"), report="r", label_index=1)
    later = [*first, newcomer, pair(50, 0, 1)]
    archive(sessions, [newcomer, pair(50, 0, 1)])
    assert fix_held_out(sessions, Snapshot(tuple(later), "y"), 0.5, seed=1, run_id=run_row(sessions)) == held
    train, evaluation = split(Snapshot(tuple(later), "y"), held)
    assert {p.study_uid for p in evaluation} == held
    assert not {p.patient_id for p in train} & {p.patient_id for p in held_pairs}
    assert newcomer not in train


def test_held_out_needs_two_classes(sessions) -> None:
    only_one = [pair(p, 0, 1) for p in range(12)]
    archive(sessions, only_one)
    with pytest.raises(NotEnoughData, match="two classes or more"):
        fix_held_out(sessions, Snapshot(tuple(only_one), "x"), 0.25, 0, run_row(sessions))


def test_new_pairs_count_against_the_last_candidate(sessions) -> None:
    pairs = [pair(p, 0, 0) for p in range(5)]
    assert new_pair_count(sessions, "m", Snapshot(tuple(pairs), "x")) == 5
    with sessions.begin() as session:
        session.add(ModelVersion(model_name="m", data_snapshot=json.dumps({"studies": [p.study_uid for p in pairs[:3]]})))
    assert new_pair_count(sessions, "m", Snapshot(tuple(pairs), "x")) == 2
    assert new_pair_count(sessions, "other", Snapshot(tuple(pairs), "x")) == 5


@pytest.mark.parametrize(("candidate", "problems", "serving", "promote", "reason"), [
    (0.80, [], None, True, "no serving version"),
    (0.79, [], {"auc": 0.80}, True, "auc 0.790 >= serving 0.800 - tolerance 0.02"),
    (0.70, [], {"auc": 0.80}, False, "auc 0.700 < serving 0.800 - tolerance 0.02"),
    (0.95, ["probabilities are not finite"], {"auc": 0.5}, False, "sanity check failed: probabilities are not finite"),
    (None, [], {"auc": 0.5}, False, "auc is undefined"),
])
def test_gate(candidate, problems, serving, promote, reason) -> None:
    decision = gate(Evaluation({"auc": candidate}, problems), serving, "auc", 0.02)
    assert decision.promote is promote
    assert reason in decision.reason
