"""Named acquisition and reporting shifts, to make external test sets like the paper's Dataset 2.

A cohort is written under one :class:`Shift`; ``--shift external,report-style`` combines named
shifts (later names override the fields they set). The shift name is part of every UID's
entropy, so the same seed under two shifts gives two disjoint cohorts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Shift:
    name: str = "none"
    # Scanner look: stored value = scale * intensity ** gamma, then Rician noise of sigma.
    intensity_scale: float = 2000.0
    gamma: float = 1.0
    noise_sigma: float = 0.02
    bias_strength: float = 0.15  # peak log-amplitude of the smooth multiplicative bias field
    # Field of view (mm) in-plane and across slices; with --size this sets the voxel spacing.
    fov_mm: tuple[float, float] = (200.0, 184.0)
    # Instance numbers run superior-to-inferior instead of inferior-to-superior.
    descending_slices: bool = False
    # In-plane rows run posterior-to-anterior (columns stay right-to-left).
    flip_rows: bool = False
    manufacturer: str = "Synthetic Medical Systems"
    model_name: str = "SynthMR 1.5T"
    field_strength: float = 1.5
    years: tuple[int, int] = (2000, 2018)
    report_style: str = "standard"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# The components of "external", each also a shift of its own, so that a test set can change one
# thing at a time and show which one a model does not survive (tests/bench/bench_shift_components.py).
_EXTERNAL_PARTS: dict[str, dict] = {
    "external-geometry": dict(fov_mm=(230.0, 168.0), descending_slices=True, flip_rows=True),
    "external-intensity": dict(intensity_scale=900.0, gamma=0.8),
    "external-noise": dict(noise_sigma=0.04, bias_strength=0.35),
    "external-tags": dict(manufacturer="Other Imaging Corp", model_name="OtherScan 3T", field_strength=3.0,
                          years=(2018, 2023)),
}
_SHIFTS: dict[str, dict] = {
    "none": {},
    "external": {k: v for part in _EXTERNAL_PARTS.values() for k, v in part.items()},
    **_EXTERNAL_PARTS,
    "report-style": dict(report_style="narrative"),
}
SHIFT_NAMES = tuple(_SHIFTS)


def resolve_shift(names: str | None) -> Shift:
    """``"external,report-style"`` -> one Shift; unknown names raise ValueError listing the known."""
    parts = [part.strip() for part in (names or "none").split(",") if part.strip()] or ["none"]
    fields: dict = {}
    for part in parts:
        if part not in _SHIFTS:
            raise ValueError(f"unknown shift {part!r}; known: {', '.join(SHIFT_NAMES)}")
        fields.update(_SHIFTS[part])
    return Shift(name="+".join(sorted(set(parts) - {"none"})) or "none", **fields)
