"""The retraining job: ``radpair retrain --now`` and the cron schedule of ``radpair serve``.

One run, under the cross-process lock (:mod:`radpair.retrain_lock`):

1. snapshot the archive's pairs, skip unless ``retrain.min_new_pairs`` are new since the last
   candidate, fix the held-out set at the first run (:mod:`training.retrain`);
2. pre-train + fine-tune a candidate with the training configuration ``retrain.config``;
3. export it into a staging repository in its run directory (TorchScript + parity check), and
   evaluate that artifact and the version Triton serves on the same held-out studies;
4. gate; a promoted candidate is exported as the next version of the model repository and
   hot-swapped into Triton (:func:`pipeline.triton_deploy.deploy`: the old version answers until
   the new one is ready; a version that fails to load leaves the old one serving);
5. record a ``model_versions`` row either way (promoted: serving, its predecessor retired;
   otherwise rejected with the reason) and the run's outcome in ``retrain_runs``.

The schedule is an APScheduler cron trigger kept in the archive's own SQL database
(``SQLAlchemyJobStore``, table ``apscheduler_jobs``): a restart keeps the next run time, runs a
missed run once if it is within ``misfire_grace_time`` (``coalesce``), and never runs one twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.base import BaseScheduler
from sqlalchemy import Engine, MetaData, Table, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, session_factory, upgrade
from core.models import ModelStatus, ModelVersion, RetrainRun, utcnow
from core.preprocess import PreprocessParams
from core.settings import Settings
from pipeline.triton_client import TritonClient, TritonInferenceError, TritonUnavailable, client_from_settings
from pipeline.triton_deploy import DeployError, deploy
from pipeline.triton_repository import ModelRepository, RepositoryError
from radpair.options import add_settings_options, settings_from_args
from radpair.retrain_lock import RetrainBusy, held, release
from training import retrain as tr
from training.config import load_config
from training.export import ExportError, export_model, load_run

log = logging.getLogger("radpair.retrain")

JOB_ID = "radpair.retrain"
JOBSTORE = "retrain"
JOBS_TABLE = "apscheduler_jobs"


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
        outcome = _run(settings, sessions, run_id, train_config or r.config or None)
    outcome = dataclasses.replace(outcome, seconds=time.monotonic() - started)
    log.info("retrain run #%d (%s): %s in %.0f s — %s", run_id, trigger, outcome.outcome, outcome.seconds, outcome.reason)
    return outcome


def _run(settings: Settings, sessions: sessionmaker[Session], run_id: int,
         train_config: str | None) -> RetrainOutcome:
    r = settings.retrain
    model_name = settings.triton.model_name
    run_dir = (Path(r.runs_dir) if r.runs_dir else settings.data_dir / "retrain") / f"run-{run_id:04d}"
    snapshot = tr.take_snapshot(sessions, settings.database_url, settings.store_dir, run_dir / "series")
    new = tr.new_pair_count(sessions, model_name, snapshot)
    counts = {"snapshot_size": len(snapshot.studies), "new_pairs": new}
    if new < r.min_new_pairs:
        return _finish(sessions, run_id, "skipped", f"{new} new pairs < retrain.min_new_pairs {r.min_new_pairs}", None, counts)
    try:
        held_out = tr.fix_held_out(sessions, snapshot, r.held_out_fraction, r.seed, run_id)
    except tr.NotEnoughData as exc:
        return _finish(sessions, run_id, "skipped", str(exc), None, counts)
    train, evaluation = tr.split(snapshot, held_out)
    config = load_config(train_config)
    client = client_from_settings(settings)
    record = ModelVersion(model_name=model_name, retrain_run_pk=run_id, run_config=json.dumps(config.to_dict()),
                          data_snapshot=json.dumps(snapshot.record(held_out)), run_dir=str(run_dir / "train"))
    serving = record_serving_version(sessions, client.repository, model_name, evaluation)
    record.parent_pk = serving.id if serving else None
    try:
        candidate_dir = tr.train_candidate(config, train, run_dir / "train")
    except Exception as exc:  # a configuration that diverges (NaN) or breaks: a candidate that failed
        log.exception("retrain run #%d: training failed", run_id)
        decision, version = tr.GateDecision(False, f"training failed: {type(exc).__name__}: {exc}"), None
    else:
        record.run_dir = str(candidate_dir)
        decision, version = _judge_and_promote(settings, client, record, serving, candidate_dir, evaluation, run_dir)
    _record(sessions, record, serving, version, decision.reason)
    outcome = "promoted" if version is not None else "rejected"
    label = f"version {version}" if version is not None else "candidate"
    return _finish(sessions, run_id, outcome, f"{label}: {decision.reason}", version, counts)


def _judge_and_promote(settings: Settings, client: TritonClient, record: ModelVersion, serving: ModelVersion | None,
                       candidate_dir: Path, evaluation: list, run_dir: Path) -> tuple[tr.GateDecision, int | None]:
    """Stage (export + parity), evaluate, gate; if it passes, export as the next version and hot-swap it."""
    r = settings.retrain
    repo, name = client.repository, client.model_name
    model, params, class_names, facts = load_run(candidate_dir)
    snapshot = json.loads(record.data_snapshot)
    facts = {**facts, "retrain_run": record.retrain_run_pk,
             "data_snapshot": {k: snapshot[k] for k in ("sha256", "pairs", "labelled")}}
    try:
        staged = export_model(model, params, class_names, facts, run_dir / "export", name, check=True)
    except ExportError as exc:
        return tr.GateDecision(False, f"export parity check failed: {exc}"), None
    candidate = tr.evaluate_artifact(staged.path / "model.pt", params, evaluation)
    metrics = {**candidate.metrics, "parity_max_abs_diff": staged.parity_max_abs_diff}
    record.metrics = json.dumps(metrics)
    decision = tr.gate(candidate, json.loads(serving.metrics) if serving else None, r.primary_metric, r.tolerance)
    if not decision.promote:
        return decision, None
    try:
        exported = export_model(model, params, class_names, {**facts, "metrics": metrics}, repo.root, name)
        deploy(client, repo, exported.version, reason=f"retrain run {record.retrain_run_pk}")
    except (RepositoryError, DeployError, TritonUnavailable, TritonInferenceError) as exc:
        if serving is not None and serving.version is not None:
            repo.set_current(name, serving.version)
        return tr.GateDecision(False, f"passed the gate ({decision.reason}) but was not served: {exc}"), None
    return decision, exported.version


def _record(sessions: sessionmaker[Session], record: ModelVersion, serving: ModelVersion | None, version: int | None,
            reason: str) -> None:
    """The candidate's row (serving or rejected); a promotion retires the version it replaced."""
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


def record_serving_version(sessions: sessionmaker[Session], repo: ModelRepository, name: str, evaluation: list) -> ModelVersion | None:
    """The serving version's row, evaluated on the held-out set in this run.

    A version found serving in the repository without a row (shipped with radpair, or exported by
    hand) gets one now, so the lineage starts from what was really serving.
    """
    try:
        current = repo.version(name, repo.current(name))
    except RepositoryError:
        return None
    result = tr.evaluate_artifact(current.path / "model.pt", PreprocessParams.from_dict(current.preprocess()), evaluation)
    with sessions.begin() as session:
        row = session.scalars(select(ModelVersion).where(ModelVersion.model_name == name,
                                                          ModelVersion.version == current.version)).one_or_none()
        if row is None:
            card = current.card()
            row = ModelVersion(model_name=name, version=current.version, status=ModelStatus.SERVING,
                               reason="found serving in the model repository (not trained by a retrain run)",
                               run_config=json.dumps(card.get("config", {})), run_dir=str(card.get("run", "")),
                               data_snapshot=json.dumps(card.get("data_snapshot", {})), promoted_at=utcnow())
            session.add(row)
        row.status = ModelStatus.SERVING
        row.metrics = json.dumps(result.metrics)
        session.flush()
        # A version swapped out by hand (`radpair model load`) is no longer serving.
        for stale in session.scalars(select(ModelVersion).where(ModelVersion.model_name == name, ModelVersion.id != row.id,
                                                                 ModelVersion.status == ModelStatus.SERVING)):
            stale.status, stale.retired_at = ModelStatus.RETIRED, utcnow()
            stale.reason = f"not the repository's current version (version {current.version} is)"
    return row


def _finish(sessions: sessionmaker[Session], run_id: int, outcome: str, reason: str, version: int | None,
            counts: dict[str, int]) -> RetrainOutcome:
    release(sessions, run_id, outcome, reason, **counts)
    return RetrainOutcome(run_id, outcome, reason, version)


# --- the schedule -----------------------------------------------------------------------------

_service: RetrainService | None = None


def scheduled_retrain() -> None:
    """What the stored cron job calls (by reference, without arguments: it uses the settings of
    the process that runs it, never a pickled copy of old ones)."""
    if _service is None:
        log.error("retrain: the cron job fired but no retrain component is running in this process")
        return
    _service.start_run("cron")


class RetrainService:
    """The ``radpair serve`` component: the cron job in the SQL job store."""

    name = "retrain"

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self._thread: threading.Thread | None = None

    def start(self, scheduler: BaseScheduler) -> None:
        global _service
        r = self.settings.retrain
        store = SQLAlchemyJobStore(engine=self.engine, tablename=JOBS_TABLE)
        store.start(scheduler, JOBSTORE)
        existing = store.lookup_job(JOB_ID)
        trigger = r.cron_trigger()
        wanted = (str(trigger), str(trigger.timezone), r.misfire_grace_time, r.coalesce)
        if existing is not None and (not r.enabled or wanted != _job_signature(existing)):
            store.remove_job(JOB_ID)
            existing = None
        scheduler.add_jobstore(store, JOBSTORE)
        _service = self
        if not r.enabled:
            log.info("retrain: schedule disabled (retrain.enabled = false)")
            return
        if existing is None:
            scheduler.add_job("radpair.retrain:scheduled_retrain", trigger, id=JOB_ID, jobstore=JOBSTORE,
                              name="retrain", misfire_grace_time=r.misfire_grace_time, coalesce=r.coalesce,
                              max_instances=1)
            log.info("retrain: scheduled '%s' (%s)", r.cron, r.timezone)
        else:
            log.info("retrain: schedule '%s' (%s) kept; next run %s", r.cron, r.timezone, existing.next_run_time)

    def start_run(self, trigger: str) -> None:
        """Run in a thread of its own: a run takes hours, and must not hold up the scheduler or a
        shutdown. If radpair stops mid-run, the run's heartbeat stops with it and the next run
        takes the abandoned run over once ``retrain.lock_lease`` has passed."""
        if self._thread is not None and self._thread.is_alive():
            log.info("retrain (%s): not started: this process's previous run is still going", trigger)
            return
        self._thread = threading.Thread(target=self.run, args=(trigger,), name="retrain", daemon=True)
        self._thread.start()

    def run(self, trigger: str) -> RetrainOutcome | None:
        try:
            return run_retrain(self.settings, self.engine, trigger)
        except RetrainBusy as exc:
            log.info("retrain (%s): not started: %s", trigger, exc)
        except Exception:
            log.exception("retrain (%s): run failed", trigger)
        return None

    def stop(self) -> None:
        global _service
        if _service is self:
            _service = None
        if self._thread is not None and self._thread.is_alive():
            log.warning("retrain: stopping during a run; it is abandoned and taken over by the next run")


def _job_signature(job: Any) -> tuple[str, str, int, bool]:
    return str(job.trigger), str(job.trigger.timezone), job.misfire_grace_time, job.coalesce


def next_run_time(engine: Engine) -> dt.datetime | None:
    """When the stored cron job fires next (None: not scheduled), read without a scheduler."""
    if not inspect(engine).has_table(JOBS_TABLE):
        return None
    jobs = Table(JOBS_TABLE, MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        stamp = conn.execute(select(jobs.c.next_run_time).where(jobs.c.id == JOB_ID)).scalar()
    return None if stamp is None else dt.datetime.fromtimestamp(stamp, dt.timezone.utc)


def summary(engine: Engine) -> str:
    """Two lines for ``radpair status``: the next scheduled run and the last run's outcome."""
    upcoming = next_run_time(engine)
    with session_factory(engine)() as session:
        last = session.scalars(select(RetrainRun).order_by(RetrainRun.id.desc()).limit(1)).first()
    lines = [f"retrain next run: {upcoming:%Y-%m-%d %H:%M:%S} UTC" if upcoming else "retrain next run: not scheduled"]
    if last is None:
        lines.append("retrain last run: none yet")
    else:
        lines.append(f"retrain last run: #{last.id} {last.trigger} {last.started_at:%Y-%m-%d %H:%M:%S} UTC "
                     f"{last.outcome} — {last.reason}")
    return "\n".join(lines) + "\n"


# --- command line -----------------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retrain", help="retrain on the archive's pairs, gate, promote to Triton")
    add_settings_options(p)
    p.add_argument("--now", action="store_true", help="run the retraining job now (else: show the schedule)")
    p.add_argument("--train-config", metavar="FILE", help="training configuration (overrides retrain.config)")
    p.set_defaults(func=retrain_command)


def retrain_command(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    engine = make_engine(settings.database_url, echo=settings.database.echo)
    upgrade(engine)
    try:
        if not args.now:
            print(summary(engine), end="")
            return 0
        try:
            outcome = run_retrain(settings, engine, "manual", args.train_config)
        except RetrainBusy as exc:
            print(f"radpair retrain: not started: {exc}", file=sys.stderr)
            return 3
        except Exception as exc:  # recorded as a failed run by the lock; the traceback is in the log
            log.exception("retrain run failed")
            print(f"radpair retrain: run failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        print(f"retrain run #{outcome.run_id}: {outcome.outcome} in {outcome.seconds:.0f} s — {outcome.reason}")
        return 0
    finally:
        engine.dispose()
