"""The whole system on loopback, as a site runs it: Orthanc auto-routes a study to `radpair serve`,
which runs the real tritonserver (a small exported model) and sends its results back into the study.
Shared by the end-to-end tests and the real-viewer test.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from radpair.core.db import make_engine, session_factory
from radpair.serving.server import ManagedTritonServer
from radpair.training.cohort import read_cohort
from tests.support.models import MODEL, export_small
from tests.support.orthanc import Orthanc
from tests.support.ports import free_port
from tests.support.serve import ServeProcess

RESULT_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4": "SEG", "1.2.840.10008.5.1.4.1.1.88.34": "SR",
                  "1.2.840.10008.5.1.4.1.1.30": "PM"}
# A site's own organisation root (a 2.25 UUID-derived root, as a site without a registered one would use).
UID_ROOT = "2.25.24837461890129387"


@contextmanager
def running_system(tmp: Path, dicomweb: bool = False) -> Iterator[SimpleNamespace]:
    """A 4-study cohort, Triton, `radpair serve` and Orthanc (with DICOMweb when ``dicomweb``)."""
    cohort_dir = tmp / "cohort"
    subprocess.run([sys.executable, "-m", "radpair", "cohort", "--out", str(cohort_dir), "--n", "4", "--seed", "11",
                    "--size", "24", "40", "40"], check=True, capture_output=True, timeout=300)
    cohort = [s for s in read_cohort(cohort_dir)]
    repo = tmp / "triton_models"
    export_small(repo, seed=1)
    triton = ManagedTritonServer(repo, free_port(), free_port(), free_port(), [MODEL], work_dir=tmp / "triton_work",
                                 restart_backoff=0.2)
    triton.start()
    pacs_port = free_port()
    env = {
        "RADPAIR_LISTENER_STABLE_AGE": "1.5",
        "RADPAIR_LISTENER_STABILITY_CHECK_INTERVAL": "0.25",
        "RADPAIR_TRITON_MODE": "remote",
        "RADPAIR_TRITON_URL": triton.http_url,
        "RADPAIR_TRITON_MODEL_REPOSITORY": str(repo),
        "RADPAIR_PIPELINE_POLL_INTERVAL": "0.25",
        "RADPAIR_PIPELINE_HEARTBEAT_INTERVAL": "1.0",
        "RADPAIR_PIPELINE_LEASE_SECONDS": "4.0",
        "RADPAIR_PIPELINE_BACKOFF_BASE": "1.5",
        "RADPAIR_PIPELINE_BACKOFF_MAX": "2.0",
        "RADPAIR_PIPELINE_DESTINATIONS": f'[{{name = "pacs", ae_title = "PACS", host = "127.0.0.1", port = {pacs_port}}}]',
        "RADPAIR_PIPELINE_RULES": '[{name = "mr-head", study_description = "", destinations = ["pacs"]}]',
        "RADPAIR_DICOM_UID_ROOT": UID_ROOT,
    }
    data_dir = tmp / "radpair"
    radpair = ServeProcess(data_dir, env=env)
    assert radpair.port, "radpair serve did not start:\n" + radpair.log()
    pacs = Orthanc(tmp / "orthanc", radpair_port=radpair.port, stable_age=1, aet="PACS", dicom_port=pacs_port,
                   dicomweb=dicomweb).start()
    engine = make_engine(f"sqlite:///{(data_dir / 'radpair.db').resolve()}")
    system = SimpleNamespace(tmp=tmp, cohort=cohort, triton=triton, pacs=pacs, radpair=radpair, env=env,
                             data_dir=data_dir, sessions=session_factory(engine))
    try:
        yield system
    finally:
        system.radpair.kill()
        pacs.stop()
        triton.stop()
        engine.dispose()


def results_in_pacs(pacs: Orthanc, study_uid: str) -> dict[str, dict]:
    """radpair's results in the PACS's copy of the study, by kind (SEG, SR, PM)."""
    return {RESULT_CLASSES[i["SOPClassUID"]]: i for i in pacs.instances_of_study(study_uid)
            if i["SOPClassUID"] in RESULT_CLASSES}
