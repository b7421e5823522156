"""End to end with a real PACS: Orthanc auto-routes a study to `radpair serve`, which runs the real
tritonserver and sends SR + SEG + parametric map back into the same study in Orthanc.

Then the faults, on the same running system: Triton stopped (the job waits, completes when it is
back), Orthanc stopped while results are pending (delivered once after it restarts, no
duplicates), radpair SIGKILLed mid-job (the job completes after a restart).
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import select

from radpair.core.models import Association, Delivery, Job, JobState, Study
from radpair.core.task import load_task
from radpair.pipeline import codes
from tests.support.checks import dciodvfy_errors, text_items, wait_for
from tests.support.dcmtk import storescu
from tests.support.e2e import UID_ROOT, results_in_pacs, running_system
from tests.support.serve import ServeProcess

pytestmark = pytest.mark.slow

TASK = load_task()


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    with running_system(tmp_path_factory.mktemp("e2e")) as running:
        yield running


def inference_job(system: SimpleNamespace, study_uid: str) -> Job | None:
    with system.sessions() as s:
        return s.scalars(select(Job).join(Study, Study.id == Job.study_pk)
                         .where(Study.study_uid == study_uid, Job.kind == "inference").order_by(Job.id.desc())).first()


def test_pacs_autoroutes_a_study_and_gets_sr_seg_pm_in_the_same_study(system: SimpleNamespace) -> None:
    study = system.cohort[0]
    mr_files = sorted(study.series_dir.glob("*.dcm"))
    storescu(mr_files + [study.report_path], system.pacs.dicom_port, "PACS")
    found = wait_for("SR, SEG and PM in Orthanc", lambda: (r := results_in_pacs(system.pacs, study.study_uid))
                     and len(r) == 3 and r, timeout=180)

    paths = {kind: system.pacs.download(i["id"], system.tmp / f"{kind}.dcm") for kind, i in found.items()}
    for kind, path in paths.items():
        assert dciodvfy_errors(path) == [], kind
    source_uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in mr_files}
    in_pacs = {i["SOPInstanceUID"] for i in system.pacs.instances_of_study(study.study_uid)}
    assert source_uids <= in_pacs

    seg = hd.seg.segread(paths["SEG"])
    assert seg.StudyInstanceUID == study.study_uid and seg.PatientID == study.patient_id
    assert {uid for _, _, uid in seg.get_source_image_uids()} == source_uids, "SEG references every source slice"
    pm = pydicom.dcmread(paths["PM"])
    assert pm.StudyInstanceUID == study.study_uid and pm.AccessionNumber == study.accession_number

    sr = hd.sr.srread(paths["SR"])
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations(name=TASK.finding.class_concept.code())
    assert evaluation.value in {c.code.code() for c in TASK.classes}
    (probability,) = group.get_measurements(name=codes.CLASS_PROBABILITY)
    assert 0.5 <= probability.value <= 1.0
    texts = dict(text_items(group[0]))
    assert texts[("DCM", "111003")] == "1", "the serving model version is the algorithm version"
    referenced = {item.ReferencedSOPInstanceUID for s in sr.CurrentRequestedProcedureEvidenceSequence
                  for series in s.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in referenced and source_uids <= referenced
    if TASK.location_of(study.report_text):
        assert group.finding_sites[0].topographical_modifier == TASK.location_code(TASK.location_of(study.report_text)).code()

    for kind, ds in (("SEG", seg), ("PM", pm), ("SR", sr)):
        assert ds.SOPInstanceUID.startswith(UID_ROOT + ".") and ds.SeriesInstanceUID.startswith(UID_ROOT + "."), kind

    log = system.radpair.log()
    assert f"study {study.study_uid}: receiving" in log
    assert study.patient_id not in log and study.accession_number not in log, "patient identifiers at INFO"

    status = subprocess.run([sys.executable, "-m", "radpair", "status", "--data-dir", str(system.data_dir)],
                            capture_output=True, text=True, timeout=60, check=True).stdout
    (result_line,) = [line for line in status.splitlines() if line.startswith(study.study_uid)]
    assert f"p={probability.value:.3f}" in result_line and "v1" in result_line
    assert any(line.split()[:2] == ["pacs", "delivered"] for line in status.splitlines()), status


def test_orthanc_routes_each_study_once(system: SimpleNamespace) -> None:
    """radpair's results make the study stable again in Orthanc; the example Lua rule must not
    send the study's series to radpair a second time (each routed series is marked)."""
    study = system.cohort[0]
    wait_for("results of the first study", lambda: len(results_in_pacs(system.pacs, study.study_uid)) == 3, timeout=180)
    orthanc_study = system.pacs.post("/tools/lookup", study.study_uid.encode())[0]["ID"]
    wait_for("the study stable again after the results", lambda: system.pacs.get(f"/studies/{orthanc_study}")["IsStable"],
             timeout=30)
    wait_for("Orthanc's store jobs to finish", lambda: all(
        system.pacs.get(f"/jobs/{j}")["State"] in ("Success", "Failure") for j in system.pacs.get("/jobs")), timeout=30)
    with system.sessions() as s:
        from_pacs = s.scalars(select(Association).where(Association.calling_ae == "PACS")).all()
    assert sum(a.stored for a in from_pacs) > 0
    assert sum(a.duplicates for a in from_pacs) == 0, [(a.stored, a.duplicates) for a in from_pacs]


def test_triton_down_jobs_wait_then_complete(system: SimpleNamespace) -> None:
    study = system.cohort[1]
    system.triton.stop()
    try:
        storescu(sorted(study.series_dir.glob("*.dcm")), system.radpair.port, "RADPAIR")
        job = wait_for("the inference job to wait for Triton",
                       lambda: (j := inference_job(system, study.study_uid)) and j.waits >= 1 and j, timeout=60)
        assert job.state is JobState.PENDING and job.attempts == 0
    finally:
        system.triton.start()
    wait_for("results after Triton is back", lambda: len(results_in_pacs(system.pacs, study.study_uid)) == 3, timeout=120)
    assert inference_job(system, study.study_uid).state is JobState.DONE


def test_pacs_down_while_results_pending_then_delivered_once(system: SimpleNamespace) -> None:
    study = system.cohort[2]
    system.pacs.stop()
    try:
        storescu(sorted(study.series_dir.glob("*.dcm")), system.radpair.port, "RADPAIR")
        wait_for("deliveries waiting for the PACS", lambda: _waiting_deliveries(system, study.study_uid) == 3, timeout=120)
    finally:
        system.pacs.start()
    found = wait_for("results in Orthanc after its restart",
                     lambda: (r := results_in_pacs(system.pacs, study.study_uid)) and len(r) == 3 and r, timeout=120)
    all_uids = [i["SOPInstanceUID"] for i in system.pacs.instances_of_study(study.study_uid)]
    assert len(all_uids) == len(set(all_uids)) and len(found) == 3
    with system.sessions() as s:
        states = set(s.scalars(select(Delivery.state).join(Job, Job.id == Delivery.job_pk)
                               .join(Study, Study.id == Job.study_pk).where(Study.study_uid == study.study_uid)))
    assert states == {"delivered"}


def _waiting_deliveries(system: SimpleNamespace, study_uid: str) -> int:
    with system.sessions() as s:
        return len(s.scalars(select(Job).join(Study, Study.id == Job.study_pk)
                             .where(Study.study_uid == study_uid, Job.kind == "delivery", Job.waits >= 1)).all())


def test_radpair_killed_mid_job_completes_after_restart(system: SimpleNamespace) -> None:
    study = system.cohort[3]
    storescu(sorted(study.series_dir.glob("*.dcm")), system.radpair.port, "RADPAIR")
    wait_for("the inference job to run", lambda: (j := inference_job(system, study.study_uid))
             and j.state is JobState.RUNNING, timeout=60, every=0.02)
    system.radpair.proc.send_signal(signal.SIGKILL)
    system.radpair.proc.wait()
    assert inference_job(system, study.study_uid).state is JobState.RUNNING, "killed while the job was running"
    system.radpair = ServeProcess(system.data_dir, env=system.env)
    wait_for("results after the restart", lambda: len(results_in_pacs(system.pacs, study.study_uid)) == 3, timeout=120)
    job = inference_job(system, study.study_uid)
    assert job.state is JobState.DONE and job.attempts == 2
