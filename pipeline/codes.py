"""radpair's own coded concepts, in the private scheme ``99RADPAIR``, and scheme declarations.

DICOM lets an organisation define codes in a private scheme whose designator starts with ``99``
(PS3.16 §8.2). The concepts every task's results use and no standard terminology has — the
probability of the predicted class, the model's attention region and map — are defined here, once.
A task's classes, locations and finding carry their own codes in the task file
(:mod:`radpair.core.task`); standard codes are used wherever one exists.
"""

from __future__ import annotations

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from pydicom.sr.coding import Code

from radpair.core.task import TaskDefinition

SCHEME = "99RADPAIR"
SCHEME_NAME = "radpair private codes"
ORGANIZATION = "radpair project"

CLASS_PROBABILITY = Code("RP101", SCHEME, "Probability of predicted class")
LESION_PROBABILITY = Code("RP104", SCHEME, "Probability of finding presence")
ATTENTION_REGION = Code("RP102", SCHEME, "Model attention region")
ATTENTION_MAP = Code("RP103", SCHEME, "Model attention")


def probability_of_class(task: TaskDefinition, name: str) -> Code:
    """RP2nn "Probability of <class>": the probability named by its class, for viewers that label a
    finding with its numbers' names only (OHIF); nn is the class's place in the task (01, 02...)."""
    return Code(f"RP2{task.class_names.index(name) + 1:02d}", SCHEME, f"Probability of {task.class_code(name).meaning}")


def coding_schemes(task: TaskDefinition) -> list[CodingSchemeIdentificationItem]:
    """The private schemes an object of ``task`` uses, for its Coding Scheme Identification Sequence."""
    declared = {SCHEME: (SCHEME_NAME, ORGANIZATION)}
    for scheme in task.coding_schemes:
        declared.setdefault(scheme.designator, (scheme.name, scheme.organization))
    return [CodingSchemeIdentificationItem(designator=designator, name=name, responsible_organization=organization or None)
            for designator, (name, organization) in declared.items()]
