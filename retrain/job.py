"""One retraining run: ``radpair retrain --now`` and each firing of the cron schedule.

Under the cross-process lock (:mod:`radpair.retrain.lock`):

1. snapshot the archive's pairs, skip unless ``retrain.min_new_pairs`` are new since the last
   candidate, fix the held-out set at the first run (:mod:`radpair.retrain.snapshot`);
2. pre-train + fine-tune a candidate with the training configuration ``retrain.train_config``;
3. export it into a staging repository in its run directory (TorchScript + parity check), and
   evaluate that artifact and the version Triton serves on the same held-out studies
   (:mod:`radpair.retrain.gate`);
4. gate; a promoted candidate is exported as the next version of the model repository and
   hot-swapped into Triton (:func:`radpair.serving.deploy.deploy`: the old version answers until
   the new one is ready; a version that fails to load leaves the old one serving);
5. record a ``model_versions`` row either way (:mod:`radpair.retrain.lineage`) and the run's
   outcome in ``retrain_runs``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.db import session_factory
from radpair.core.model_card import OperatingPoints
from radpair.core.models import ModelVersion
from radpair.core.settings import Settings
from radpair.core.task import TaskDefinition, load_task
from radpair.retrain import gate as judge
from radpair.retrain import lineage, snapshot
from radpair.retrain.lock import held, release
from radpair.serving.client import (
    TritonClient,
    TritonInferenceError,
    TritonUnavailable,
    client_from_settings,
)
from radpair.serving.deploy import DeployError, deploy
from radpair.serving.repository import RepositoryError
from radpair.training.config import TrainConfig, load_config
from radpair.training.data import PairedStudy
from radpair.training.export import ExportError, export_model, load_run
from radpair.training.finetune import finetune
from radpair.training.pretrain import pretrain

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetrainOutcome:
    run_id: int
    # "promoted", "rejected" or "skipped" (a run that fails raises, and is recorded as "failed").
    outcome: str
    reason: str
    # The Triton version now serving, when promoted.
    version: int | None = None
    seconds: float = 0.0


def run_retrain(settings: Settings, engine: Engine, trigger: str, train_config: str | None = None) -> RetrainOutcome:
    """One retraining run (see the module docstring); raises :class:`RetrainBusy` if one is running."""
    sessions = session_factory(engine)
    r = settings.retrain
    started = time.monotonic()
    with held(sessions, trigger, r.lock_lease) as run_id:
        outcome = _run(settings, sessions, run_id, train_config or r.train_config or None)
    outcome = dataclasses.replace(outcome, seconds=time.monotonic() - started)
    log.info("retrain run #%d (%s): %s in %.0f s — %s", run_id, trigger, outcome.outcome, outcome.seconds, outcome.reason)
    return outcome


def train_candidate(config: TrainConfig, task: TaskDefinition, studies: Sequence[PairedStudy], out: Path) -> Path:
    """Pre-train on every training pair (labelled or not), then fine-tune from it on the ones with a
    class label or a known lesion presence; returns the fine-tuning run directory (what the exporter reads)."""
    pretrain(config, task, studies, out / "pretrain")
    finetune(config, task, [s for s in studies if s.label_index >= 0 or s.lesion >= 0], out / "finetune",
             init=str(out / "pretrain"))
    return out / "finetune"


def _run(settings: Settings, sessions: sessionmaker[Session], run_id: int,
         train_config: str | None) -> RetrainOutcome:
    r = settings.retrain
    task = load_task(settings.task)
    model_name = task.model
    run_dir = (Path(r.runs_dir) if r.runs_dir else settings.data_dir / "retrain") / f"run-{run_id:04d}"
    snap = snapshot.take_snapshot(sessions, settings.database_url, settings.store_dir, run_dir / "series", task)
    new = snapshot.new_pair_count(sessions, model_name, snap)
    counts = {"snapshot_size": len(snap.studies), "new_pairs": new}
    if new < r.min_new_pairs:
        return _finish(sessions, run_id, "skipped", f"{new} new pairs < retrain.min_new_pairs {r.min_new_pairs}", None, counts)
    try:
        held_out = snapshot.fix_held_out(sessions, snap, r.held_out_fraction, r.seed, run_id)
    except snapshot.NotEnoughData as exc:
        return _finish(sessions, run_id, "skipped", str(exc), None, counts)
    train, evaluation = snapshot.split(snap, held_out)
    config = load_config(train_config)
    client = client_from_settings(settings)
    record = ModelVersion(model_name=model_name, retrain_run_pk=run_id, run_config=json.dumps(config.to_dict()),
                          data_snapshot=json.dumps(snap.record(held_out)), run_dir=str(run_dir / "train"))
    serving = lineage.record_serving_version(sessions, client.repository, model_name, evaluation)
    record.parent_pk = serving.id if serving else None
    try:
        candidate_dir = train_candidate(config, task, train, run_dir / "train")
    except Exception as exc:  # a configuration that diverges (NaN) or breaks: a candidate that failed
        log.exception("retrain run #%d: training failed", run_id)
        decision, version = judge.GateDecision(False, f"training failed: {type(exc).__name__}: {exc}"), None
    else:
        record.run_dir = str(candidate_dir)
        decision, version = _judge_and_promote(settings, client, record, serving, candidate_dir, evaluation, run_dir)
    lineage.record_candidate(sessions, record, serving, version, decision.reason)
    outcome = "promoted" if version is not None else "rejected"
    label = f"version {version}" if version is not None else "candidate"
    return _finish(sessions, run_id, outcome, f"{label}: {decision.reason}", version, counts)


def _judge_and_promote(settings: Settings, client: TritonClient, record: ModelVersion, serving: ModelVersion | None,
                       candidate_dir: Path, evaluation: list, run_dir: Path) -> tuple[judge.GateDecision, int | None]:
    """Stage (export + parity), evaluate, gate; if it passes, export as the next version and hot-swap it."""
    r = settings.retrain
    repo, name = client.repository, client.model_name
    model, params, class_names, facts = load_run(candidate_dir)
    snap = json.loads(record.data_snapshot)
    facts = {**facts, "retrain_run": record.retrain_run_pk,
             "data_snapshot": {k: snap[k] for k in ("sha256", "pairs", "labelled")}}
    try:
        staged = export_model(model, params, class_names, facts, run_dir / "export", name, check=True)
    except ExportError as exc:
        return judge.GateDecision(False, f"export parity check failed: {exc}"), None
    trained = facts.get("metrics") or {}
    candidate = judge.evaluate_artifact(staged.path / "model.pt", params, class_names, evaluation,
                                        OperatingPoints.from_card(facts))
    metrics = {**candidate.metrics, "parity_max_abs_diff": staged.parity_max_abs_diff}
    record.metrics = json.dumps(metrics)
    decision = judge.gate(candidate, json.loads(serving.metrics) if serving else None, r.primary_metric, r.tolerance)
    if not decision.promote:
        return decision, None
    try:
        # The card keeps the fine-tuning figures and operating points, and adds the held-out ones.
        exported = export_model(model, params, class_names, {**facts, "metrics": {**trained, "held_out": metrics}},
                                repo.root, name)
        deploy(client, repo, exported.version, reason=f"retrain run {record.retrain_run_pk}")
    except (RepositoryError, DeployError, TritonUnavailable, TritonInferenceError) as exc:
        if serving is not None and serving.version is not None:
            repo.set_current(name, serving.version)
        return judge.GateDecision(False, f"passed the gate ({decision.reason}) but was not served: {exc}"), None
    return decision, exported.version


def _finish(sessions: sessionmaker[Session], run_id: int, outcome: str, reason: str, version: int | None,
            counts: dict[str, int]) -> RetrainOutcome:
    release(sessions, run_id, outcome, reason, **counts)
    return RetrainOutcome(run_id, outcome, reason, version)
