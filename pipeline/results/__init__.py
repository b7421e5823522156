"""DICOM result objects, all built with highdicom's typed constructors, in new series of the study.

One module per object: :mod:`.seg` (binary SEG of the attention region), :mod:`.pmap`
(Parametric Map of the continuous attention), :mod:`.sr` (TID 1500 Comprehensive 3D SR),
:mod:`.sc` (optional Secondary Capture key image). Each writer takes the source series'
datasets (in any order) and frames aligned with them; who made the object — the equipment and
the algorithm — comes from one :class:`Provenance` for all four; what the model found from one
:class:`Finding`. A study without a lesion gets the SR alone (no SEG, map or key image: there is
no region to show).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.tag import Tag

_PIXEL_DATA = Tag("PixelData")


@dataclass(frozen=True)
class Provenance:
    """Who made a result: the algorithm (name, version = the serving model version) and radpair."""

    algorithm_name: str
    model_name: str
    model_version: str
    manufacturer: str = "radpair"
    software_version: str = version("radpair")
    device_serial_number: str = "radpair"
    # The model card's validation figures and operating points, stated with every result.
    parameters: tuple[str, ...] = ()

    @property
    def model_label(self) -> str:
        return f"{self.model_name} v{self.model_version}"

    def equipment(self) -> dict[str, Any]:
        """The General Equipment attributes, as the keyword arguments every highdicom object takes."""
        return {
            "manufacturer": self.manufacturer,
            "manufacturer_model_name": self.model_label,
            "software_versions": self.software_version,
            "device_serial_number": self.device_serial_number,
        }

    def seg_algorithm(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.algorithm_name, version=self.model_version, family=codes.DCM.ArtificialIntelligence,
            parameters={f"{i + 1}": text for i, text in enumerate(self.parameters)} or None)

    def sr_algorithm(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(name=self.algorithm_name, version=self.model_version,
                                             family=codes.DCM.ArtificialIntelligence,
                                             parameters=list(self.parameters) or None)


@dataclass(frozen=True)
class Finding:
    """What the model says of a study: is there a lesion, and if so, of which class."""

    present: bool
    lesion_probability: float
    # The class and its probability; None when no lesion was found (no class is reported then).
    predicted_class: str | None = None
    class_probability: float | None = None


def headers(datasets: Iterable[Dataset]) -> list[Dataset]:
    """The datasets without their pixel data, for the writers that only read headers.

    highdicom deep-copies and walks what it is given; dropping the pixels makes the SEG ten times
    faster to build and keeps the SR's evidence small.
    """
    out = []
    for ds in datasets:
        header = Dataset({tag: element for tag, element in ds.items() if tag != _PIXEL_DATA})
        if hasattr(ds, "file_meta"):
            header.file_meta = ds.file_meta
        out.append(header)
    return out
