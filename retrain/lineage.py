"""Model lineage: every write to ``model_versions`` happens here, and ``radpair model list`` reads it.

A row per version or rejected candidate says where it came from (parent, retraining run, data
snapshot, training configuration), how it did on the held-out set, and its status
(candidate/serving/rejected/retired) with the reason. Retraining records candidates and the
version it found serving; ``radpair model load`` and ``rollback`` record the swaps they make.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.model_card import OperatingPoints
from radpair.core.models import ModelStatus, ModelVersion, utcnow
from radpair.core.preprocess import PreprocessParams
from radpair.retrain.gate import evaluate_artifact
from radpair.serving.repository import ModelRepository, RepositoryError
from radpair.training.data import PairedStudy


def _metrics(row: ModelVersion) -> str:
    metrics = json.loads(row.metrics or "{}")
    shown = [f"{k}={metrics[k]:.3f}" for k in ("auc", "f1") if isinstance(metrics.get(k), (int, float))]
    return " ".join(shown) or "-"


def _snapshot(row: ModelVersion) -> str:
    snap = json.loads(row.data_snapshot or "{}")
    if not snap.get("sha256"):
        return "-"
    return f"{snap.get('pairs', '?')} pairs ({snap.get('labelled', '?')} labelled) sha256:{snap['sha256'][:12]}"


def lineage_lines(sessions: sessionmaker[Session], name: str) -> list[str]:
    """One line per recorded version or candidate of ``name``, oldest first."""
    with sessions() as session:
        rows = session.scalars(select(ModelVersion).where(ModelVersion.model_name == name).order_by(ModelVersion.id)).all()
        versions = {r.id: r.version for r in rows}
        header = f"  {'version':<8} {'status':<10} {'parent':<7} {'run':<5} {'created (UTC)':<19}  {'held-out':<19} {'data snapshot':<48} reason"
        lines = [header]
        for r in rows:
            parent = versions.get(r.parent_pk) if r.parent_pk else None
            lines.append(
                f"  {r.version if r.version is not None else '-':<8} {r.status.value:<10} "
                f"{parent if parent is not None else '-':<7} {('#' + str(r.retrain_run_pk)) if r.retrain_run_pk else '-':<5} "
                f"{r.created_at:%Y-%m-%d %H:%M:%S}  {_metrics(r):<19} {_snapshot(r):<48} {r.reason}")
    return lines


def _row(session: Session, name: str, version: int, reason: str) -> ModelVersion:
    """The row of a numbered version; one exported by hand enters the lineage here."""
    found = session.scalars(select(ModelVersion).where(ModelVersion.model_name == name,
                                                        ModelVersion.version == version)).one_or_none()
    if found is None:
        found = ModelVersion(model_name=name, version=version, reason=reason)
        session.add(found)
    return found


def record_swap(sessions: sessionmaker[Session], name: str, retired: int, serving: int, why: str,
                rollback: bool = False) -> None:
    """Version ``retired`` stops serving and ``serving`` serves (``radpair model load`` or ``rollback``)."""
    if retired == serving:
        return
    now = utcnow()
    verb = "rolled back" if rollback else "replaced"
    with sessions.begin() as session:
        old = _row(session, name, retired, f"recorded at a {'rollback' if rollback else 'load'}")
        new = _row(session, name, serving, f"recorded at a {'rollback' if rollback else 'load'}")
        old.status, old.retired_at = ModelStatus.RETIRED, now
        old.reason = f"{verb} {'to' if rollback else 'by'} version {serving}: {why}"
        new.status, new.promoted_at, new.retired_at = ModelStatus.SERVING, now, None
        new.reason = (f"serving again: rollback from version {retired} ({why})" if rollback
                      else f"loaded by hand in place of version {retired} ({why})")


def record_candidate(sessions: sessionmaker[Session], record: ModelVersion, serving: ModelVersion | None,
                     version: int | None, reason: str) -> None:
    """A retraining candidate's row (serving or rejected); a promotion retires the version it replaced."""
    now = utcnow()
    with sessions.begin() as session:
        record.version, record.reason = version, reason
        record.status = ModelStatus.SERVING if version is not None else ModelStatus.REJECTED
        record.promoted_at = now if version is not None else None
        if version is not None and serving is not None:
            previous = session.get(ModelVersion, serving.id)
            previous.status, previous.retired_at = ModelStatus.RETIRED, now
            previous.reason = f"replaced by version {version} (retrain run {record.retrain_run_pk})"
        session.add(record)


def record_serving_version(sessions: sessionmaker[Session], repo: ModelRepository, name: str,
                           evaluation: Sequence[PairedStudy]) -> ModelVersion | None:
    """The serving version's row, evaluated on the held-out set in this run.

    A version found serving in the repository without a row (shipped with radpair, or exported by
    hand) gets one now, so the lineage starts from what was really serving.
    """
    try:
        current = repo.version(name, repo.current(name))
    except RepositoryError:
        return None
    card = current.card()
    result = evaluate_artifact(current.path / "model.pt", PreprocessParams.from_dict(current.preprocess()),
                               card["class_names"], evaluation, OperatingPoints.from_card(card))
    with sessions.begin() as session:
        row = session.scalars(select(ModelVersion).where(ModelVersion.model_name == name,
                                                          ModelVersion.version == current.version)).one_or_none()
        if row is None:
            row = ModelVersion(model_name=name, version=current.version, status=ModelStatus.SERVING,
                               reason="found serving in the model repository (not trained by a retrain run)",
                               run_config=json.dumps(card.get("training_config", {})), run_dir=str(card.get("run", "")),
                               data_snapshot=json.dumps(card.get("data_snapshot", {})), promoted_at=utcnow())
            session.add(row)
        row.status = ModelStatus.SERVING
        row.metrics = json.dumps(result.metrics)
        session.flush()
        # A version swapped out without a record is no longer serving.
        for stale in session.scalars(select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.id != row.id,
                                                                 ModelVersion.status == ModelStatus.SERVING)):
            stale.status, stale.retired_at = ModelStatus.RETIRED, utcnow()
            stale.reason = f"not the repository's current version (version {current.version} is)"
    return row
