"""Inference jobs end to end inside radpair, on SQLite and PostgreSQL: routing, results, outbox, supersede.

The model gateway is a deterministic function standing in for Triton (it attends to the
brightest voxels); the real Triton path is covered by test_e2e.py. Everything else is real:
database, store, MONAI preprocessing, highdicom writers, job queue and worker.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.db import make_engine, session_factory, upgrade
from radpair.core.models import Delivery, Job, JobState, Result
from radpair.core.settings import load_settings
from radpair.core.store import InstanceStore
from radpair.core.task import load_task
from radpair.pipeline import codes as rp_codes
from radpair.pipeline.analysis import StudyAnalysis, enqueue_stable_studies
from radpair.pipeline.jobs import JobQueue, QueuePolicy
from radpair.pipeline.status import status_tables
from radpair.pipeline.workers import WorkerPool
from tests.support.archive import add_report, archive_files, mark_stable
from tests.support.dicom import write_head_series
from tests.support.models import BrightestVoxelModel


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> SimpleNamespace:
    engine = make_engine(database_url)
    upgrade(engine)
    settings = load_settings(None, environ={}, overrides={
        "data_dir": str(tmp_path / "data"),
        "pipeline.destinations": [{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 9}],
        "pipeline.rules": [{"name": "brain", "study_description": "head", "destinations": ["pacs"]}],
    })
    sessions = session_factory(engine)
    store = InstanceStore(settings.store_dir)
    model = BrightestVoxelModel()
    queue = JobQueue(sessions, QueuePolicy())
    pool = WorkerPool(queue, {"inference": StudyAnalysis(settings, sessions, store, model)}, 1, 0.1, 5.0)
    yield SimpleNamespace(settings=settings, sessions=sessions, store=store, model=model, queue=queue, pool=pool,
                          tmp=tmp_path)
    engine.dispose()


def run_inference(env: SimpleNamespace) -> Job:
    job = env.queue.claim("test", ("inference",))
    assert job is not None
    env.pool.run_one(job, "test")
    with env.sessions() as s:
        return s.get(Job, job.id)


def _walk(ds):
    for item in getattr(ds, "ContentSequence", []):
        yield item
        yield from _walk(item)


def results(sessions: sessionmaker[Session], generation: int) -> dict[str, Result]:
    with sessions() as s:
        return {r.kind: r for r in s.scalars(select(Result).where(Result.generation == generation))}


def test_stable_study_gets_results_outbox_and_late_instances_supersede(env: SimpleNamespace) -> None:
    paths = write_head_series(env.tmp / "mr", slices=16, rows=40, cols=36)
    study_uid = archive_files(env.sessions, env.store, paths[:15])
    add_report(env.sessions, study_uid, "Findings: an infratentorial mass in the left cerebellar hemisphere.")
    assert enqueue_stable_studies(env.sessions) == 0, "still receiving"
    mark_stable(env.sessions, study_uid)
    assert enqueue_stable_studies(env.sessions) == 1
    assert enqueue_stable_studies(env.sessions) == 0, "one job per generation"

    assert run_inference(env).state is JobState.DONE
    first = results(env.sessions, 1)
    assert set(first) == {"seg", "pm", "sr"}
    for result in first.values():
        ds = pydicom.dcmread(env.store.absolute(result.path))
        assert ds.StudyInstanceUID == study_uid and ds.SOPInstanceUID == result.sop_instance_uid
        assert (result.predicted_class, result.model_version) == ("BRAF-V600E", "3")
    sr = hd.sr.srread(env.store.absolute(first["sr"].path))
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    task = load_task()
    assert group.finding_sites[0].topographical_modifier == task.location_code("infratentorial").code()
    evaluations = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}
    assert evaluations[task.finding.code.value] == "52101004"  # lesion Present
    assert evaluations[task.finding.class_concept.value] == task.class_code("BRAF-V600E").value
    (lesion,) = group.get_measurements(name=rp_codes.LESION_PROBABILITY)
    assert float(lesion.value) == pytest.approx(0.9)
    parameters = [item.TextValue for item in _walk(sr) if item.ConceptNameCodeSequence[0].CodeValue == "111002"]
    assert "internal cross-validation: class AUC 0.90 ± 0.02" in parameters, "the card's validation figures"
    seg = pydicom.dcmread(env.store.absolute(first["seg"].path))
    assert seg.pixel_array.any(), "a lesion study's SEG has a region"
    with env.sessions() as s:
        deliveries = s.scalars(select(Delivery)).all()
        assert sorted(d.result_pk for d in deliveries) == sorted(r.id for r in first.values())
        assert {s.get(Job, d.job_pk).state for d in deliveries} == {JobState.PENDING}

    # Stable again with nothing new in the analysed series (a report, or the PACS echoing radpair's
    # results back): not re-run, so an auto-routing PACS cannot loop.
    mark_stable(env.sessions, study_uid)
    enqueue_stable_studies(env.sessions)
    unchanged = run_inference(env)
    assert unchanged.state is JobState.SKIPPED and "unchanged since generation 1" in unchanged.last_error

    # A late instance: the study goes stable again as generation 3 and is reprocessed.
    archive_files(env.sessions, env.store, paths[15:])
    mark_stable(env.sessions, study_uid)
    assert enqueue_stable_studies(env.sessions) == 1
    assert run_inference(env).state is JobState.DONE
    second = results(env.sessions, 3)
    first = results(env.sessions, 1)
    for kind in ("seg", "pm", "sr"):
        assert second[kind].sop_instance_uid != first[kind].sop_instance_uid
        assert second[kind].series_uid != first[kind].series_uid
        assert first[kind].superseded_by == second[kind].id
        assert second[kind].superseded_by is None
    new_sr = pydicom.dcmread(env.store.absolute(second["sr"].path))
    predecessors = {item.ReferencedSOPInstanceUID for study in new_sr.PredecessorDocumentsSequence
                    for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert predecessors == {first["sr"].sop_instance_uid}
    with env.sessions() as s:
        assert len(s.scalars(select(Delivery)).all()) == 6


def test_a_study_without_a_lesion_gets_an_sr_saying_so_and_no_region(env: SimpleNamespace) -> None:
    env.model.lesion = 0.2  # below the model's lesion threshold (0.5)
    study_uid = archive_files(env.sessions, env.store, write_head_series(env.tmp / "mr", slices=16))
    mark_stable(env.sessions, study_uid)
    enqueue_stable_studies(env.sessions)
    job = run_inference(env)
    assert job.state is JobState.DONE
    only = results(env.sessions, 1)
    assert set(only) == {"sr"}, "no SEG, parametric map or key image without a lesion"
    assert (only["sr"].predicted_class, round(only["sr"].probability, 3)) == ("none", 0.8)
    sr = hd.sr.srread(env.store.absolute(only["sr"].path))
    assert not sr.content.get_volumetric_roi_measurement_groups()
    (group,) = sr.content.get_image_measurement_groups()
    task = load_task()
    evaluations = {e.name.value: e.value.value for e in group.get_qualitative_evaluations()}
    assert evaluations[task.finding.code.value] == "272519000", "finding Absent"
    assert task.finding.class_concept.value not in evaluations, "no class without a lesion"
    (probability,) = group.get_measurements(name=rp_codes.LESION_PROBABILITY)
    assert float(probability.value) == pytest.approx(0.2)
    (evidence,) = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert len(evidence.ReferencedSOPSequence) == 16, "the evidence is the source series alone"


def test_unmatched_study_is_skipped_with_the_reason(env: SimpleNamespace) -> None:
    paths = write_head_series(env.tmp / "mr", slices=4)
    study_uid = archive_files(env.sessions, env.store, paths)
    mark_stable(env.sessions, study_uid)
    enqueue_stable_studies(env.sessions)
    job = run_inference(env)
    assert job.state is JobState.SKIPPED
    assert "rule 'brain'" in job.last_error and "4 instances < 8" in job.last_error
    assert env.model.calls == 0
    assert results(env.sessions, 1) == {}


def test_job_for_an_outdated_generation_is_skipped(env: SimpleNamespace) -> None:
    study_uid = archive_files(env.sessions, env.store, write_head_series(env.tmp / "mr"))
    mark_stable(env.sessions, study_uid)
    enqueue_stable_studies(env.sessions)
    mark_stable(env.sessions, study_uid)
    job = run_inference(env)
    assert (job.state, job.last_error) == (JobState.SKIPPED, "superseded by generation 2")


def test_status_tables_say_what_happened(env: SimpleNamespace) -> None:
    study_uid = archive_files(env.sessions, env.store, write_head_series(env.tmp / "mr", slices=4))
    mark_stable(env.sessions, study_uid)
    enqueue_stable_studies(env.sessions)
    run_inference(env)
    with env.sessions() as s:
        jobs, unsuccessful, results, deliveries = status_tables(s)
    assert jobs.rows == [("inference", "skipped", 1, 0)]
    (row,) = unsuccessful.rows
    assert row[1:5] == ("inference", study_uid, "skipped", 1) and "4 instances < 8" in row[5]
    assert results.rows == [] and deliveries.rows == []


def test_a_study_no_rule_takes_is_skipped_with_the_rules_reason(env: SimpleNamespace) -> None:
    study_uid = archive_files(env.sessions, env.store, write_head_series(env.tmp / "mr", study_description="CT CHEST"))
    mark_stable(env.sessions, study_uid)
    enqueue_stable_studies(env.sessions)
    job = run_inference(env)
    assert job.state is JobState.SKIPPED
    assert "study description 'CT CHEST' !~ 'head'" in job.last_error
