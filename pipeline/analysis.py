"""The inference job: one stable study generation → routed series → model → SEG, PM, SR → outbox.

The model says whether there is a lesion (at its card's lesion threshold). A lesion study gets the
SEG of the overlay (attention inside the brain at the card's overlay threshold), the parametric
map, the SR with the predicted class, and optionally a key image; a lesion-free study gets the SR
alone, saying that no lesion was found, with no class and no region.

Results are written to the instance store and recorded (with their delivery jobs) in one
transaction, so what the outbox sends is always a file that exists, and a retried delivery sends
the very same SOP Instance UIDs. UIDs are derived from (study, generation, object kind, model
version), so a job re-run after a crash rewrites identical objects instead of new ones.

Late instances make the listener mark the study stable again with a new generation; that
generation gets its own job and results in new series with new UIDs, the previous generation's
results are marked superseded, and the new SR lists the old ones as predecessor documents. A job
for a generation that is no longer the latest is skipped.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pydicom
from pydicom import Dataset
from sqlalchemy import and_, exists, select, update
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.gateway import ModelGateway
from radpair.core.models import Delivery, Instance, Job, Result, Series, Study, StudyState
from radpair.core.settings import Settings
from radpair.core.store import InstanceStore
from radpair.core.uids import new_uid
from radpair.pipeline.inference import Prediction, predict
from radpair.pipeline.jobs import ClaimedJob, Skip, enqueue
from radpair.pipeline.results import Finding, Provenance, headers
from radpair.pipeline.results.pmap import build_parametric_map
from radpair.pipeline.results.sc import build_key_image
from radpair.pipeline.results.seg import build_seg
from radpair.pipeline.results.sr import build_sr
from radpair.pipeline.rules import NoMatch, route

log = logging.getLogger(__name__)

# The SR's image library lists at most this many slices: the most attended ones of the SEG region
# (each entry is ~50 content items that highdicom copies and walks; the evidence lists them all).
LIBRARY_SLICES = 12

# Series numbers of radpair's result series (high, so they sort after the acquired series).
SERIES_NUMBERS = {"seg": 9901, "pm": 9902, "sr": 9903, "sc": 9904}


def result_uid(study_uid: str, generation: int, kind: str, model_version: str, what: str) -> str:
    return new_uid([study_uid, str(generation), kind, model_version, what])


def enqueue_stable_studies(sessions: sessionmaker[Session]) -> int:
    """One inference job per stable study generation; the job key makes this idempotent."""
    has_job = exists().where(and_(Job.kind == "inference", Job.study_pk == Study.id,
                                  Job.generation == Study.stable_generation))
    with sessions.begin() as session:
        studies = session.execute(
            select(Study.id, Study.study_uid, Study.stable_generation)
            .where(Study.state == StudyState.STABLE, Study.stable_generation > 0, ~has_job)
        ).all()
        added = 0
        for pk, uid, generation in studies:
            if enqueue(session, "inference", f"inference:{uid}:{generation}", study_pk=pk,
                       generation=generation) is not None:
                log.info("study %s generation %d is stable: inference queued", uid, generation)
                added += 1
        return added


class StudyAnalysis:
    """Runs inference jobs; ``check_lease`` is called before anything is committed."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], store: InstanceStore,
                 models: ModelGateway) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = store
        self.models = models

    def __call__(self, job: ClaimedJob, check_lease: Callable[[], None]) -> str:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        # Short sessions around the file reads, never one across them (on SQLite each holds the write lock).
        with self.sessions() as session:
            study = session.get(Study, job.study_pk)
            if study is None:
                raise Skip("study no longer in the archive")
            if job.generation != study.stable_generation:
                raise Skip(f"superseded by generation {study.stable_generation}")
            if session.scalar(select(Result.id).where(Result.job_pk == job.id).limit(1)) is not None:
                return "results were already recorded by an earlier attempt"
            study_uid = study.study_uid
        decision = route(self.settings, self.sessions, study, self.store)
        if isinstance(decision, NoMatch):
            raise Skip(decision.reason)
        with self.sessions() as session:
            _skip_if_unchanged(session, study.id, session.get(Series, decision.inputs.series.pk))
        task = decision.task
        paths = [self.store.absolute(p) for p in decision.inputs.paths]
        source = _read_source(paths)
        timings["load"] = time.perf_counter() - start

        model = self.models.serving(task.model)
        if tuple(model.class_names) != task.class_names:
            raise ValueError(f"model {model.name} v{model.version} predicts {list(model.class_names)}, but task "
                             f"{task.name!r} has classes {list(task.class_names)}: export a model trained for the task")
        prediction = predict(paths[0].parent, source, model.params, model.infer, model.class_names,
                             model.operating.overlay)
        timings.update(prediction.timings)

        start = time.perf_counter()
        operating = model.operating
        prov = Provenance(self.settings.pipeline.algorithm_name, model.name, prediction.model_version,
                          parameters=(*model.validation, f"operating points: lesion probability >= "
                                      f"{operating.lesion_threshold:g}, overlay ({operating.overlay}) >= "
                                      f"{operating.attention_threshold:g}"))
        finding = _finding(prediction, operating.lesion_threshold)

        def uids(kind: str) -> tuple[str, str]:
            return (result_uid(study_uid, job.generation, kind, prov.model_version, "series"),
                    result_uid(study_uid, job.generation, kind, prov.model_version, "instance"))

        source_headers = headers(source)
        objects: dict[str, Dataset] = {}
        seg, mask, library = None, None, source_headers[len(source_headers) // 2:len(source_headers) // 2 + 1]
        if finding.present:
            mask = prediction.attention >= operating.attention_threshold
            seg = build_seg(source_headers, mask, task, prov, *uids("seg"), SERIES_NUMBERS["seg"])
            objects["seg"] = seg
            objects["pm"] = build_parametric_map(source_headers, prediction.attention, task, prov, *uids("pm"),
                                                 SERIES_NUMBERS["pm"])
            library = [source_headers[i] for i in _key_slices(mask, prediction.attention)]
        objects["sr"] = build_sr(
            source_headers, headers([seg])[0] if seg is not None else None, task, finding,
            task.location_of(decision.inputs.report), prov, *uids("sr"), SERIES_NUMBERS["sr"],
            tracking_uid=result_uid(study_uid, job.generation, "sr", prov.model_version, "tracking"),
            library=library, previous_versions=headers(self._previous_srs(job.study_pk)),
            mask=mask,
        )
        if self.settings.pipeline.secondary_capture and finding.present:
            objects["sc"] = build_key_image(source, prediction.attention, prediction.predicted_class,
                                            prediction.probability, prov, *uids("sc"), SERIES_NUMBERS["sc"])
        timings["build"] = time.perf_counter() - start

        start = time.perf_counter()
        written = {kind: self._write(ds) for kind, ds in objects.items()}
        timings["write"] = time.perf_counter() - start
        check_lease()
        outcome = (f"{prediction.predicted_class} p={prediction.probability:.3f}" if finding.present
                   else f"no {task.finding.name}")
        destinations = self._record(job, finding, task.finding.absent_label, prov, decision.rule.destinations,
                                    objects, written, source[0].SeriesInstanceUID)
        log.info("study %s gen %d: %s (%s probability %.3f; model %s v%s, series %s) -> %s; %s",
                 study_uid, job.generation, outcome, task.finding.name, finding.lesion_probability, model.name,
                 prov.model_version, source[0].SeriesInstanceUID, ", ".join(destinations) or "archive only",
                 " ".join(f"{k}={v:.2f}s" for k, v in timings.items()))
        return f"{outcome} ({task.finding.name} p={finding.lesion_probability:.3f}) v{prov.model_version}"

    def _write(self, ds: Dataset) -> str:
        relative = self.store.relative_path(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        with io.BytesIO() as buffer:
            ds.save_as(buffer, enforce_file_format=True)
            self.store.write(relative, [buffer.getvalue()])
        return relative

    def _previous_srs(self, study_pk: int) -> list[Dataset]:
        with self.sessions() as session:
            paths = list(session.scalars(select(Result.path).where(
                Result.study_pk == study_pk, Result.kind == "sr", Result.superseded_by.is_(None))))
        return [pydicom.dcmread(self.store.absolute(p)) for p in paths if self.store.absolute(p).is_file()]

    def _record(self, job: ClaimedJob, finding: Finding, absent_label: str, prov: Provenance,
                destinations: Sequence[str], objects: dict[str, Dataset], written: dict[str, str],
                source_series_uid: str) -> list[str]:
        """The results and their deliveries, in one transaction. A study without the finding is
        recorded as the task's absent label with the probability of absence."""
        predicted, probability = ((finding.predicted_class, finding.class_probability) if finding.present
                                  else (absent_label, 1.0 - finding.lesion_probability))
        with self.sessions.begin() as session:
            rows = {}
            for kind, ds in objects.items():
                rows[kind] = Result(
                    job_pk=job.id, study_pk=job.study_pk, generation=job.generation, kind=kind,
                    sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                    series_uid=ds.SeriesInstanceUID, source_series_uid=source_series_uid, path=written[kind],
                    model_name=prov.model_name, model_version=prov.model_version,
                    predicted_class=predicted, probability=probability,
                )
                session.add(rows[kind])
            session.flush()
            for kind, row in rows.items():
                session.execute(
                    update(Result)
                    .where(Result.study_pk == job.study_pk, Result.kind == kind, Result.generation < job.generation,
                           Result.superseded_by.is_(None))
                    .values(superseded_by=row.id)
                )
                for name in destinations:
                    delivery_job = enqueue(session, "delivery", f"delivery:{row.sop_instance_uid}:{name}",
                                           {"result": row.id, "destination": name}, study_pk=job.study_pk,
                                           generation=job.generation)
                    if delivery_job is not None:
                        session.flush()
                        session.add(Delivery(result_pk=row.id, job_pk=delivery_job.id, destination=name))
        return list(destinations)


def _skip_if_unchanged(session: Session, study_pk: int, series: Series) -> None:
    """A new generation whose analysed series got no instance since the current result was made
    (e.g. only a report arrived, or the PACS echoed radpair's own results back) is not re-run:
    that also stops a PACS auto-routing rule from looping results back into a new analysis."""
    current = session.scalars(select(Result).where(
        Result.study_pk == study_pk, Result.kind == "sr", Result.superseded_by.is_(None))).first()
    if current is None or current.source_series_uid != series.series_uid:
        return
    newer = session.scalar(select(Instance.id).where(
        Instance.series_pk == series.id, Instance.received_at > current.created_at).limit(1))
    if newer is None:
        raise Skip(f"series {series.series_uid} unchanged since generation {current.generation}'s result")


def _finding(prediction: Prediction, lesion_threshold: float) -> Finding:
    """The model's answer at its operating point: a class only when a lesion is found."""
    if prediction.lesion_probability >= lesion_threshold:
        return Finding(True, prediction.lesion_probability, prediction.predicted_class, prediction.probability)
    return Finding(False, prediction.lesion_probability)


def _key_slices(mask: np.ndarray, attention: np.ndarray) -> list[int]:
    """Indices (in source order) of the most attended slices that the SEG region touches."""
    touched = [i for i in range(len(mask)) if mask[i].any()]
    return sorted(sorted(touched, key=lambda i: -float(attention[i].sum()))[:LIBRARY_SLICES])


def _read_source(paths: Sequence[Any]) -> list[Dataset]:
    """The selected series' datasets, in slice order along the normal (for stable frame order)."""
    datasets = [pydicom.dcmread(p) for p in paths]
    iop = np.asarray(datasets[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(datasets, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))))
