"""SR documents → radiology reports: text flattened into sections, paired with the imaging study.

A report is paired with the study it describes by StudyInstanceUID, else by AccessionNumber +
PatientID (RIS-generated reports often live in a study of their own). Either side may arrive
first: a report without its images waits unpaired and is paired when an imaging series of its
study arrives; a Study UID match then wins over an earlier accession match.

Extraction is bounded (``listener.report_*`` settings): an SR with more content items, deeper
nesting or more text than allowed, or whose extraction takes longer than ``report_timeout``, raises
:class:`ReportRefused`; the instance is still archived, only its text is not read as a report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    BasicTextSRStorage,
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    ExtensibleSRStorage,
)
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from radpair.core.models import Patient, Report, Series, Study
from radpair.listener.header import HeaderError, ListenerLimits, check_structure, current_limits

REPORT_SOP_CLASSES = frozenset({
    BasicTextSRStorage, EnhancedSRStorage, ComprehensiveSRStorage, Comprehensive3DSRStorage, ExtensibleSRStorage,
})
# Series of these modalities are documents about images, not images a report can describe.
NON_IMAGING_MODALITIES = frozenset({"SR", "KO", "PR", "DOC"})
UNTITLED = "Report"


@dataclass(frozen=True)
class ParsedReport:
    text: str
    sections: dict[str, str]


def _concept(item: Dataset) -> str:
    seq = item.get("ConceptNameCodeSequence")
    return str(seq[0].get("CodeMeaning", "")).strip() if seq else ""


def _item_text(item: Dataset) -> str:
    kind = item.get("ValueType", "")
    if kind == "TEXT":
        return str(item.get("TextValue", "")).strip()
    if kind == "CODE" and item.get("ConceptCodeSequence"):
        return str(item.ConceptCodeSequence[0].get("CodeMeaning", "")).strip()
    if kind == "NUM" and item.get("MeasuredValueSequence"):
        mv = item.MeasuredValueSequence[0]
        units = mv.get("MeasurementUnitsCodeSequence")
        unit = f" {units[0].get('CodeValue', '')}" if units else ""
        return f"{_concept(item)}: {mv.get('NumericValue', '')}{unit}".strip()
    return ""


class ReportRefused(ValueError):
    """The SR's content exceeds a ``listener.report_*`` limit; the message says which."""


class _Budget:
    """What is left of the text length and the time one extraction may use."""

    def __init__(self, limits: ListenerLimits) -> None:
        self.limits = limits
        self.text = limits.report_max_text
        self.deadline = time.monotonic() + limits.report_timeout

    def spend(self, text: str) -> None:
        self.text -= len(text)
        if self.text < 0:
            raise ReportRefused(f"more than {self.limits.report_max_text} characters of text (listener.report_max_text)")
        if time.monotonic() > self.deadline:
            raise ReportRefused(f"extraction took longer than {self.limits.report_timeout:g} s (listener.report_timeout)")


def _collect(items: list[Dataset], into: list[str], budget: _Budget) -> None:
    for item in items:
        text = _item_text(item)
        budget.spend(text)
        if text:
            into.append(text)
        _collect(list(item.get("ContentSequence", [])), into, budget)


def parse_report(part10: bytes) -> ParsedReport | None:
    """Flatten an SR's content tree: each child of the root is a section (its concept name is
    the title, e.g. Findings, Impression) holding the text of everything beneath it.
    Returns None for an SR without any text (e.g. pure measurements or a selection); raises
    :class:`ReportRefused` beyond the report limits (checked on the element headers first, so a
    100 000-item tree is refused before pydicom builds it)."""
    limits = current_limits()
    try:
        body, implicit, little = check_structure(part10, limits=limits, max_items=limits.report_max_items,
                                                 max_depth=limits.report_max_depth)
    except HeaderError as exc:
        raise ReportRefused(str(exc)) from exc
    ds = read_dataset(BytesIO(body), implicit, little)
    budget = _Budget(limits)
    sections: dict[str, list[str]] = {}
    for child in ds.get("ContentSequence", []):
        texts: list[str] = []
        _collect([child], texts, budget)
        if texts:
            sections.setdefault(_concept(child) or UNTITLED, []).extend(texts)
    if not sections:
        return None
    joined = {title: "\n".join(parts) for title, parts in sections.items()}
    text = "\n\n".join(f"{title}:\n{body}" for title, body in joined.items())
    return ParsedReport(text=text, sections=joined)


def _imaging(study_pk_column) -> object:  # noqa: ANN001 - a SQL column expression
    return exists().where(Series.study_pk == study_pk_column, Series.modality.not_in(NON_IMAGING_MODALITIES))


def find_imaging_study(session: Session, study_uid: str, accession: str, patient_id: str) -> int | None:
    """The imaging study a report describes: same Study UID, else same accession + patient."""
    pk = session.scalar(select(Study.id).where(Study.study_uid == study_uid, _imaging(Study.id)))
    if pk is not None or not accession:
        return pk
    return session.scalar(
        select(Study.id).join(Patient)
        .where(Study.accession_number == accession, Patient.patient_id == patient_id, _imaging(Study.id))
        .order_by(Study.id.desc()).limit(1)
    )


def save_report(session: Session, parsed: ParsedReport, sr_instance_uid: str, sr_study_uid: str,
                accession: str, patient_id: str) -> Report:
    """Insert (or, for a replaced SR, update) the report row and pair it if its study is known."""
    report = session.scalar(select(Report).where(Report.sr_instance_uid == sr_instance_uid))
    if report is None:
        report = Report(sr_instance_uid=sr_instance_uid)
        session.add(report)
    report.sr_study_uid = sr_study_uid
    report.accession_number = accession
    report.patient_id = patient_id
    report.text = parsed.text
    report.sections = json.dumps(parsed.sections)
    report.study_pk = find_imaging_study(session, sr_study_uid, accession, patient_id)
    return report


def pair_waiting_reports(session: Session, study: Study, patient_id: str) -> int:
    """Called when a study gets its first imaging series: claim the reports that describe it."""
    by_uid = session.execute(
        update(Report).where(Report.sr_study_uid == study.study_uid).values(study_pk=study.id)
    ).rowcount
    by_accession = 0
    if study.accession_number:
        by_accession = session.execute(
            update(Report).where(
                Report.study_pk.is_(None),
                Report.accession_number == study.accession_number,
                Report.patient_id == patient_id,
            ).values(study_pk=study.id)
        ).rowcount
    return by_uid + by_accession
