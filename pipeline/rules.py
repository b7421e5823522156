"""Routing rules: which stable study a task runs on, and where its results go.

Rules are data from the settings file (``[[pipeline.rules]]``), never code: a rule is a set of
study-level criteria, tried in order, and names a task (its model, classes and codes). The first
rule whose criteria hold and whose task's input rule finds a series in the study wins; the series
is the one the task's input rule picks (:mod:`radpair.core.inputs`), the same as training's. A study
no rule takes stays archived; :class:`NoMatch` says why, for ``radpair status``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from radpair.core.inputs import NoSeries, StudyInputs, study_inputs
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


def route(settings: Settings, session: Session, study: Study, store: InstanceStore) -> Route | NoMatch:
    """Pick the rule, its task and the study's inputs for that task, or say why nothing matched."""
    rules = settings.pipeline.rules
    if not rules:
        return NoMatch("no routing rules configured")
    calling_aes = set(session.scalars(
        select(Instance.calling_ae).join(Series, Series.id == Instance.series_pk)
        .where(Series.study_pk == study.id, Instance.calling_ae != "").distinct()))
    reasons = []
    for rule in rules:
        failed = mismatches(rule, study, calling_aes)
        if failed:
            reasons.append(f"rule {rule.name!r}: " + "; ".join(failed))
            continue
        task = load_task(rule.task or settings.task)
        inputs = study_inputs(session, study.id, store, task)
        if isinstance(inputs, NoSeries):
            reasons.append(f"rule {rule.name!r}: {inputs.reason}")
            continue
        return Route(rule, task, inputs)
    return NoMatch("no rule matched (" + " | ".join(reasons) + ")")
