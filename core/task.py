"""The task definition: what question radpair answers, in one file read by every part that needs it.

A task file (TOML, read by :mod:`radpair.core.config`) names the classes and their SR codes, the
finding the classes describe (a lesion that may be absent), the anatomical locations with the words
that name them in a report and the one parser that reads them, the report leak terms, the image
input (modality, the series-selection rule, the preprocessing), the report-text policy, the codes
the SR uses, the Triton model that serves the task and, for the synthetic cohort generator, how
the task's cases look. Training, labels import, serving's SR/SEG codes, retraining and the cohort
generator all read it; nothing else names a class or a location. The BRAF pLGG task ships as the
default (``radpair/core/tasks/braf_plgg.toml``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

from radpair.core import config
from radpair.core.config import ConfigError
from radpair.core.preprocess import PreprocessParams
from radpair.core.settings import Settings

DEFAULT_TASK = "braf_plgg.toml"


@dataclass(frozen=True)
class CodeDef:
    """A coded concept (DICOM PS3.16 triplet)."""

    value: str
    scheme: str
    meaning: str

    def code(self) -> Any:
        """As a pydicom ``Code`` (imported here: pydicom is not needed to read a task)."""
        from pydicom.sr.coding import Code

        return Code(self.value, self.scheme, self.meaning)


@dataclass(frozen=True)
class CodingScheme:
    """A private coding scheme the task's codes use, declared in every object that uses it."""

    designator: str
    name: str
    organization: str = ""


@dataclass(frozen=True)
class ClassDef:
    name: str
    code: CodeDef


@dataclass(frozen=True)
class LocationDef:
    """A location and the words that name it in a report (matched at the start of a word,
    case-insensitive: ``cerebell`` matches "cerebellar"). ``spans``: the location is also meant when
    every one of these other locations is named (a lesion across the tentorium names both sides)."""

    name: str
    code: CodeDef
    words: tuple[str, ...] = ()
    spans: tuple[str, ...] = ()


@dataclass(frozen=True)
class FindingDef:
    """What the classes describe: a finding that is present or absent (a lesion), and where."""

    name: str = "lesion"
    code: CodeDef = CodeDef("301766008", "SCT", "Lesion of Brain")
    site: CodeDef = CodeDef("12738006", "SCT", "Brain")
    # The concept the predicted class is reported under (SR qualitative evaluation).
    class_concept: CodeDef = CodeDef("RP100", "99RADPAIR", "Predicted class")
    # The label (in a labels file, a cohort's labels.csv) of a study known to have no such finding.
    absent_label: str = "none"
    # Its signal on the analysed series: "hyperintense" (brighter than the brain, as a glioma on
    # T2/FLAIR) lets the overlay be delineated by the image within what the model attends to;
    # "any" leaves the overlay the attention alone.
    signal: Literal["any", "hyperintense"] = "any"

    @property
    def overlay_rule(self) -> str:
        """The overlay rule a model fine-tuned for this finding uses (core.preprocess.OVERLAY_RULES)."""
        return "attention-hyperintense" if self.signal == "hyperintense" else "attention"


@dataclass(frozen=True)
class InputDef:
    """The one rule that picks the series a study is analysed on — in training and in serving.

    Of the series that pass every criterion, the one with the most instances wins (ties: the lowest
    series number). Regular expressions are searched case-insensitively; empty means any.
    """

    modality: str = "MR"
    series_description: str = ""
    body_part: str = ""
    orientation: Literal["axial", "sagittal", "coronal", "any"] = "any"
    min_instances: int = 8
    # Series whose ImageType holds one of these values (e.g. a localiser) are never analysed.
    exclude_image_types: tuple[str, ...] = ("LOCALIZER", "SCOUT")
    preprocess: PreprocessParams = field(default_factory=PreprocessParams)


@dataclass(frozen=True)
class ReportDef:
    """Which text of a study's reports the models read — in training and in serving."""

    # "latest": the report received last (a corrected report replaces the first); "all": every
    # report of the study, oldest first (addenda add to it).
    policy: Literal["latest", "all"] = "latest"
    # Section titles to read (as the listener titles them, e.g. "Findings", "Impressions");
    # empty: the whole text. A report with none of them is read whole.
    sections: tuple[str, ...] = ()
    # Words that would leak the label into the text; removed from reports before training.
    leak_terms: tuple[str, ...] = ()
    # A sentence containing one of these words does not locate anything ("No cerebellar lesion.").
    negations: tuple[str, ...] = ("no", "not", "without", "negative", "absent", "patent", "unremarkable", "normal")


@dataclass(frozen=True)
class SRDef:
    procedure: CodeDef = CodeDef("24590-2", "LN", "Brain MRI")


@dataclass(frozen=True)
class CohortLocation:
    """For the synthetic cohort: how often a lesion is at this task location, at which of the
    phantom's sites (:data:`radpair.training.cohort.phantom.SITES`) with what relative weight, and
    how a report names the location."""

    location: str
    prior: float
    sites: dict[str, float]
    phrase: str = ""


@dataclass(frozen=True)
class CohortClass:
    """For the synthetic cohort: how lesions of a class look (overlapping between classes, so the
    class is learnable from the image but not separable) and how common they are per location."""

    name: str
    # Relative frequency of the class at each location (normalised over the classes).
    prior: dict[str, float]
    radius_mm: tuple[float, float] = (14.0, 4.0)  # normal: mean, sd
    margin_mm: tuple[float, float] = (1.6, 0.45)  # log-normal: median, sigma
    cyst: float = 0.4  # probability of a cystic component
    heterogeneity: tuple[float, float] = (0.08, 0.5)  # log-normal: median, sigma
    lobulation: tuple[float, float] = (0.0, 0.25)  # uniform: low, high


@dataclass(frozen=True)
class CohortDef:
    locations: tuple[CohortLocation, ...] = ()
    classes: tuple[CohortClass, ...] = ()


@dataclass(frozen=True)
class TaskDefinition:
    name: str
    classes: tuple[ClassDef, ...]
    locations: tuple[LocationDef, ...] = ()
    description: str = ""
    # The Triton model that serves the task.
    model: str = "radpair_classifier"
    finding: FindingDef = field(default_factory=FindingDef)
    input: InputDef = field(default_factory=InputDef)
    report: ReportDef = field(default_factory=ReportDef)
    sr: SRDef = field(default_factory=SRDef)
    coding_schemes: tuple[CodingScheme, ...] = ()
    cohort: CohortDef = field(default_factory=CohortDef)

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ValueError("a task needs at least two classes")
        for kind, names in (("class", self.class_names), ("location", self.location_names)):
            if len(set(names)) != len(names):
                raise ValueError(f"{kind} names must be unique: {list(names)}")
        for location in self.locations:
            unknown = set(location.spans) - set(self.location_names)
            if unknown or location.name in location.spans:
                raise ValueError(f"location {location.name!r} spans unknown locations {sorted(unknown) or [location.name]}")
        for item in self.cohort.locations:
            if item.location not in self.location_names:
                raise ValueError(f"cohort location {item.location!r} is not one of the task's locations")
        if self.cohort.classes and [c.name for c in self.cohort.classes] != list(self.class_names):
            raise ValueError("cohort.classes must list the task's classes, in the same order")

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classes)

    @property
    def location_names(self) -> tuple[str, ...]:
        return tuple(location.name for location in self.locations)

    @property
    def label_names(self) -> tuple[str, ...]:
        """Every label a labels file may hold: the classes, and the finding's absence."""
        return (*self.class_names, self.finding.absent_label)

    def lesion_of(self, label: str) -> int:
        """1 for a class label (a lesion of that class), 0 for the absent label, -1 unknown."""
        return 1 if label in self.class_names else 0 if label == self.finding.absent_label else -1

    def class_index(self, name: str) -> int:
        """The class's position (its output of the model), -1 for a name the task lacks."""
        return self.class_names.index(name) if name in self.class_names else -1

    def class_code(self, name: str) -> CodeDef:
        for c in self.classes:
            if c.name == name:
                return c.code
        raise KeyError(f"class {name!r} is not one of task {self.name!r}'s: {', '.join(self.class_names)}")

    def location_code(self, name: str) -> CodeDef:
        return next(location.code for location in self.locations if location.name == name)

    def location_index(self, name: str | None) -> int:
        """0..L-1 for a location, L for none (lesion-free or unnamed): a value of its own."""
        return self.location_names.index(name) if name in self.location_names else len(self.locations)

    def location_of(self, text: str) -> str | None:
        """The location a report names, or None: the one parser (training and the SR both use it).

        Sentences with a negation are skipped; of the locations named, a location whose ``spans`` are
        all named wins, else the first named, in the task file's order.
        """
        named = _named_locations(self, text)
        for location in self.locations:
            if location.spans and set(location.spans) <= named:
                return location.name
            if location.name in named:
                return location.name
        return None

    def report_text(self, reports: Sequence[tuple[str, dict[str, str]]]) -> str:
        """The text the models read from a study's reports ``(text, sections)``, oldest first."""
        chosen = list(reports) if self.report.policy == "all" else list(reports)[-1:]
        return "\n\n".join(_sections_text(text, sections, self.report.sections) for text, sections in chosen)


def _sections_text(text: str, sections: dict[str, str], wanted: Sequence[str]) -> str:
    if not wanted:
        return text
    lowered = {title.lower(): body for title, body in sections.items()}
    found = [f"{title}:\n{lowered[title.lower()]}" for title in wanted if title.lower() in lowered]
    return "\n\n".join(found) if found else text


@functools.lru_cache(maxsize=256)
def _pattern(word: str, whole: bool) -> re.Pattern[str]:
    """``word`` at the start of a word (``cerebell`` in "cerebellar"), or as a whole word."""
    return re.compile(r"(?<![a-z0-9])" + re.escape(word.lower()) + (r"(?![a-z0-9])" if whole else ""))


_SENTENCE = re.compile(r"[.;:\n]+")


def _named_locations(task: TaskDefinition, text: str) -> set[str]:
    named: set[str] = set()
    for sentence in _SENTENCE.split((text or "").lower()):
        if any(_pattern(w, True).search(sentence) for w in task.report.negations):
            continue
        for location in task.locations:
            if any(_pattern(w, False).search(sentence) for w in location.words):
                named.add(location.name)
    return named


def default_task_path() -> Path:
    """The task file shipped with radpair (package data)."""
    return Path(str(resources.files("radpair.core") / "tasks" / DEFAULT_TASK))


def load_task(path: str | Path | None = None) -> TaskDefinition:
    """The task in ``path`` (empty: the shipped default); errors name the key and the file."""
    path = Path(path) if path else default_task_path()
    try:
        return config.load(TaskDefinition, path, what="task")
    except ConfigError as exc:
        raise ConfigError(f"{exc} (in {path})") from None


def deployed_tasks(settings: Settings) -> list[TaskDefinition]:
    """The tasks a service runs: the settings' ``task`` and every routing rule's, each once."""
    paths = dict.fromkeys([settings.task, *(rule.task or settings.task for rule in settings.pipeline.rules)])
    return [load_task(path) for path in paths]
