"""The archive schema migrates and round-trips on SQLite and a real PostgreSQL server."""

from __future__ import annotations

from sqlalchemy import inspect, select

from radpair.core.db import current_revision, make_engine, session_factory, upgrade
from radpair.core.models import Instance, Patient, Series, Study, StudyState


def test_migrations_create_schema_and_are_idempotent(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    upgrade(engine)
    assert current_revision(engine) is not None
    tables = set(inspect(engine).get_table_names())
    assert {"patients", "studies", "series", "instances", "reports", "associations", "quarantine"} <= tables


def test_instance_hierarchy_round_trip(database_url: str) -> None:
    engine = make_engine(database_url)
    upgrade(engine)
    Session = session_factory(engine)
    with Session.begin() as session:
        patient = Patient(patient_id="P1", name="Doe^Jane")
        study = Study(study_uid="1.2.3", patient=patient, accession_number="A1")
        series = Series(series_uid="1.2.3.4", study=study, modality="MR")
        session.add(Instance(sop_instance_uid="1.2.3.4.5", sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                             series=series, transfer_syntax_uid="1.2.840.10008.1.2.1",
                             path="1.2.3/1.2.3.4/1.2.3.4.5.dcm", size=10, sha256="0" * 64))
    with Session() as session:
        inst = session.scalars(select(Instance)).one()
        assert inst.series.study.patient.name == "Doe^Jane"
        assert inst.series.study.state is StudyState.RECEIVING
