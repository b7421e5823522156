"""A made-up task with three classes, other locations and other codes runs the whole path without a
code change: cohort -> contrastive pre-training -> fine-tuning -> export -> Triton inference -> SR.

Everything the path needs about the task comes from its file (tests/support/tasks/three_classes.toml);
the configuration is tiny (32³, one epoch each), so the figures are plumbing, not method.
"""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import select

from radpair.cli import main
from radpair.core.db import make_engine, session_factory
from radpair.core.models import Label, Result, Study
from radpair.core.task import load_task
from radpair.serving.repository import ModelRepository, read_config
from radpair.training.cohort import read_cohort
from tests.support.checks import code_items, dciodvfy_errors, wait_for
from tests.support.dcmtk import storescu
from tests.support.models import TINY
from tests.support.ports import free_port
from tests.support.serve import ServeProcess

TASK_FILE = Path(__file__).parent / "support" / "tasks" / "three_classes.toml"
TASK = load_task(TASK_FILE)
SETS = [arg for item in TINY for arg in ("--set", item)]

pytestmark = pytest.mark.slow


def test_a_three_class_task_runs_from_cohort_to_sr(tmp_path: Path) -> None:
    task = ["--task", str(TASK_FILE)]
    cohort, pre, fine, repo = tmp_path / "cohort", tmp_path / "pre", tmp_path / "fine", tmp_path / "models"
    assert main(["cohort", *task, "--out", str(cohort), "--n", "18", "--seed", "3", "--size", "32", "32", "32",
                 "--workers", "1"]) == 0
    studies = read_cohort(cohort)
    assert {s.label for s in studies if s.has_lesion} == set(TASK.class_names)
    assert {s.location for s in studies if s.has_lesion} <= set(TASK.location_names)

    assert main(["train", "pretrain", *task, "--cohort", str(cohort), "--out", str(pre), *SETS,
                 "--set", "pretrain.epochs=1"]) == 0
    assert main(["train", "finetune", *task, "--cohort", str(cohort), "--init", str(pre), "--out", str(fine), *SETS,
                 "--set", "finetune.epochs=1"]) == 0
    metrics = json.loads((fine / "metrics.json").read_text())
    assert metrics["class_names"] == list(TASK.class_names)
    assert {f"auc[{name}]" for name in TASK.class_names} <= set(metrics["internal"])
    assert len(metrics["internal_confusion"]) == 3 and sum(map(sum, metrics["internal_confusion"])) > 0
    assert main(["export", str(fine), "--repo", str(repo), "--name", TASK.model]) == 0
    config = read_config(repo / TASK.model / "config.pbtxt")
    assert [list(o.dims) for o in config.output if o.name == "probabilities"] == [[3]]
    assert (repo / TASK.model / "labels.txt").read_text().split() == list(TASK.class_names)
    # A one-epoch model's lesion threshold is noise: at 0 every study counts as a lesion study, so
    # the class path (SEG + class in the SR) is the one exercised here; the no-lesion path is
    # tests/pipeline/test_analysis.py's.
    card_path = repo / TASK.model / "1" / "model_card.json"
    card = json.loads(card_path.read_text())
    card["metrics"]["operating_points"]["lesion_threshold"] = 0.0
    card_path.write_text(json.dumps(card))

    data_dir = tmp_path / "data"
    serve = ServeProcess(data_dir, env={
        "RADPAIR_TASK": str(TASK_FILE), "RADPAIR_TRITON_MODE": "embedded", "RADPAIR_TRITON_MODEL_REPOSITORY": str(repo),
        "RADPAIR_TRITON_HTTP_PORT": str(free_port()), "RADPAIR_TRITON_GRPC_PORT": str(free_port()),
        "RADPAIR_TRITON_METRICS_PORT": str(free_port()), "RADPAIR_LISTENER_STABLE_AGE": "1",
        "RADPAIR_LISTENER_STABILITY_CHECK_INTERVAL": "0.25", "RADPAIR_PIPELINE_POLL_INTERVAL": "0.25",
        "RADPAIR_RETRAIN_ENABLED": "false"})
    engine = make_engine(f"sqlite:///{(data_dir / 'radpair.db').resolve()}")
    sessions = session_factory(engine)
    study = next(s for s in studies if s.has_lesion and TASK.location_of(s.report_text))
    try:
        storescu(sorted(study.series_dir.glob("*.dcm")) + [study.report_path], serve.port, "RADPAIR")

        def sr() -> Result | None:
            with sessions() as session:
                return session.scalars(select(Result).join(Study, Study.id == Result.study_pk)
                                       .where(Study.study_uid == study.study_uid, Result.kind == "sr")).first()

        result = wait_for("the SR of the made-up task", sr, timeout=180)
        assert (result.model_name, result.predicted_class in TASK.class_names) == (TASK.model, True), serve.log()
        path = data_dir / "instances" / result.path
        assert dciodvfy_errors(path) == []
        document = hd.sr.srread(path)
        (group,) = document.content.get_volumetric_roi_measurement_groups()
        (evaluation,) = group.get_qualitative_evaluations(name=TASK.finding.class_concept.code())
        assert evaluation.value == TASK.class_code(result.predicted_class).code()
        assert group.finding_sites[0].topographical_modifier == TASK.location_code(study.location).code()
        assert ("Finding", ("SCT", "52988006")) in set(code_items(pydicom.dcmread(path)))
        schemes = {item.CodingSchemeDesignator for item in document.CodingSchemeIdentificationSequence}
        assert {"99TESTS", "99RADPAIR"} <= schemes
        assert ModelRepository(repo).current(TASK.model) == 1

        assert main(["labels", "import", "--data-dir", str(data_dir), *task, str(cohort / "labels.csv")]) == 0
        with sessions() as session:
            imported = {row.label for row in session.scalars(select(Label))}
        # Every class, and the absent label for the cohort's lesion-free studies (a known "no lesion").
        assert set(TASK.class_names) <= imported <= set(TASK.label_names)
    finally:
        serve.kill()
        engine.dispose()
        print(serve.log())
