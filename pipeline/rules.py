"""Routing rules: which stable study a task runs on, and where its results go.

Rules are data from the settings file (``[[pipeline.rules]]``), never code: a rule is a set of
study-level criteria, tried in order, and names a task (its model, classes and codes). The first
rule whose criteria hold and whose task's input rule finds a series in the study wins; the series
is the one the task's input rule picks (:mod:`radpair.core.inputs`), the same as training's. A study
no rule takes stays archived; :class:`NoMatch` says why, for ``radpair status``.

Routing reads one file header per series; it does so between two short SQL sessions, never
inside one (on SQLite every transaction holds the write lock: a slow file must not stall ingest).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from radpair.core.inputs import NoSeries, StudyInputs, describe, inputs_of, select_series, series_rows
from radpair.core.models import Instance, Series, Study
from radpair.core.settings import RoutingRuleSettings, Settings
from radpair.core.store import InstanceStore
from radpair.core.task import TaskDefinition, load_task


@dataclass(frozen=True)
class Route:
    rule: RoutingRuleSettings
    task: TaskDefinition
    inputs: StudyInputs


@dataclass(frozen=True)
class NoMatch:
    reason: str


def _search(pattern: str, value: str) -> bool:
    return not pattern or re.search(pattern, value, re.IGNORECASE) is not None


def mismatches(rule: RoutingRuleSettings, study: Study, calling_aes: set[str]) -> list[str]:
    """The study-level criteria of ``rule`` that ``study`` fails, as short phrases."""
    failed = []
    if not _search(rule.study_description, study.description):
        failed.append(f"study description {study.description!r} !~ {rule.study_description!r}")
    if rule.calling_ae and not any(_search(rule.calling_ae, ae) for ae in calling_aes):
        failed.append(f"calling AE {'/'.join(sorted(calling_aes)) or '-'} !~ {rule.calling_ae!r}")
    return failed


def route(settings: Settings, sessions: sessionmaker[Session], study: Study, store: InstanceStore) -> Route | NoMatch:
    """Pick the rule, its task and the study's inputs for that task, or say why nothing matched."""
    rules = settings.pipeline.rules
    if not rules:
        return NoMatch("no routing rules configured")
    with sessions() as session:
        calling_aes = set(session.scalars(
            select(Instance.calling_ae).join(Series, Series.id == Instance.series_pk)
            .where(Series.study_pk == study.id, Instance.calling_ae != "").distinct()))
        rows = series_rows(session, study.id)
    series = describe(rows, store)  # file headers, outside any transaction
    reasons = []
    for rule in rules:
        failed = mismatches(rule, study, calling_aes)
        if failed:
            reasons.append(f"rule {rule.name!r}: " + "; ".join(failed))
            continue
        task = load_task(rule.task or settings.task)
        chosen = select_series(task.input, series)
        if isinstance(chosen, NoSeries):
            reasons.append(f"rule {rule.name!r}: {chosen.reason}")
            continue
        with sessions() as session:
            return Route(rule, task, inputs_of(session, study.id, chosen, task))
    return NoMatch("no rule matched (" + " | ".join(reasons) + ")")
