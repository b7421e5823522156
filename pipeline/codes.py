"""radpair's private coding scheme ``99RADPAIR`` for concepts no standard terminology has.

DICOM lets an organisation define codes in a private scheme whose designator starts with ``99``
(PS3.16 §8.2). SNOMED CT and LOINC have no concept for "predicted BRAF alteration class" or for
the tentorial compartments the cohort's reports use, so they are defined here, once, and listed
in the README. Standard codes (SNOMED CT "Brain", LOINC "Brain MRI", DCM "Artificial
Intelligence", UCUM "no units") are used wherever one exists.
"""

from __future__ import annotations

import re

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.coding import Code

SCHEME = "99RADPAIR"
SCHEME_NAME = "radpair private codes"
# Declared in every object that uses the scheme (Coding Scheme Identification Sequence).
SCHEME_IDENTIFICATION = CodingSchemeIdentificationItem(
    designator=SCHEME, name=SCHEME_NAME, responsible_organization="radpair project",
)


def _code(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


PREDICTED_CLASS = _code("RP100", "Predicted molecular class")
CLASS_PROBABILITY = _code("RP101", "Probability of predicted class")
ATTENTION_REGION = _code("RP102", "Model attention region")
ATTENTION_MAP = _code("RP103", "Model attention")

CLASSES: dict[str, Code] = {
    "BRAF-fusion": _code("RP001", "BRAF fusion"),
    "BRAF-V600E": _code("RP002", "BRAF V600E mutation"),
}

LOCATIONS: dict[str, Code] = {
    "supratentorial": _code("RP010", "Supratentorial"),
    "infratentorial": _code("RP011", "Infratentorial"),
    "transtentorial": _code("RP012", "Transtentorial"),
}

_LOCATION_WORDS = re.compile(r"\b(supratentorial|infratentorial|transtentorial)\b", re.IGNORECASE)


def class_code(name: str) -> Code:
    """The code for a model's class name; an unknown class gets a stable code of its own."""
    return CLASSES.get(name) or _code("RPX-" + re.sub(r"[^A-Za-z0-9]", "", name)[:12], name)


def location_from_report(text: str) -> Code | None:
    """The tentorial compartment a radiology report names first, if any."""
    match = _LOCATION_WORDS.search(text or "")
    return LOCATIONS[match.group(1).lower()] if match else None
