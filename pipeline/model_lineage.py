"""Model lineage for ``radpair model list|rollback``: the ``model_versions`` rows retraining writes.

``list`` shows, per version, where it came from (parent, retraining run, data snapshot) and how it
did on the held-out set; ``rollback`` records which version was retired, which serves again, and
why. Only ``core.models`` is read or written here (the pipeline never imports training).
"""

from __future__ import annotations

import json

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.models import ModelStatus, ModelVersion, utcnow


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


def record_rollback(sessions: sessionmaker[Session], name: str, retired: int, restored: int, reason: str) -> None:
    """Version ``retired`` stops serving and ``restored`` serves again, for ``reason``."""
    now = utcnow()
    with sessions.begin() as session:
        def row(version: int) -> ModelVersion:
            found = session.scalars(select(ModelVersion).where(ModelVersion.model_name == name,
                                                                ModelVersion.version == version)).one_or_none()
            if found is None:  # a version exported by hand: it enters the lineage here
                found = ModelVersion(model_name=name, version=version, reason="recorded at a rollback")
                session.add(found)
            return found

        old, new = row(retired), row(restored)
        old.status, old.retired_at = ModelStatus.RETIRED, now
        old.reason = f"rolled back to version {restored}: {reason}"
        new.status, new.promoted_at, new.retired_at = ModelStatus.SERVING, now, None
        new.reason = f"serving again: rollback from version {retired} ({reason})"
