"""Where a lesion is, which of the task's classes it has, and what it looks like.

The task's ``[cohort]`` section (:class:`radpair.core.task.CohortDef`) holds the disease model:
how often each location is hit and at which of the phantom's sites, how common each class is at
each location, and each class's appearance. Every appearance parameter is drawn from overlapping
class-conditional distributions, so the class is learnable from the image but not separable: a
good model gets a high, not perfect, AUC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from radpair.core.task import TaskDefinition
from radpair.training.cohort.phantom import SITES, lerp, reaches_posterior_fossa, soft


@dataclass(frozen=True)
class Lesion:
    label: str
    label_index: int
    location: str
    # How the report names the location (the task's phrase for it).
    location_phrase: str
    site: str
    centre: np.ndarray  # subject frame, mm
    radius: float  # mm
    axes: np.ndarray  # relative semi-axes
    lobes: np.ndarray  # [k, 3] unit directions of lobulation
    lobe_amplitude: float
    margin_mm: float  # width of the transition zone: sharp (circumscribed) to wide (infiltrative)
    cyst: tuple[np.ndarray, float] | None  # centre offset and radius, mm
    heterogeneity: float
    intensity: float

    @property
    def in_posterior_fossa(self) -> bool:
        """Whether the lesion reaches below the tentorium (what a report's mass-effect lines depend on)."""
        return reaches_posterior_fossa(self.site)


def sample_lesion(rng: np.random.Generator, task: TaskDefinition) -> Lesion:
    cohort = task.cohort
    if not cohort.locations or not cohort.classes:
        raise ValueError(f"task {task.name!r} has no [cohort] section: it says nothing about how its cases look")
    priors = np.array([item.prior for item in cohort.locations], float)
    where = cohort.locations[int(rng.choice(len(priors), p=priors / priors.sum()))]
    names = list(where.sites)
    weights = np.array([where.sites[name] for name in names], float)
    site = str(rng.choice(names, p=weights / weights.sum()))
    frequency = np.array([c.prior.get(where.location, 0.0) for c in cohort.classes], float)
    # One uniform draw against the cumulative class frequencies picks the class.
    index = int(np.searchsorted(np.cumsum(frequency / frequency.sum()), rng.random(), side="right"))
    index = min(index, len(frequency) - 1)
    look = cohort.classes[index]
    _, centre, max_radius = SITES[site]
    radius = rng.normal(*look.radius_mm)
    margin = rng.lognormal(np.log(look.margin_mm[0]), look.margin_mm[1])
    has_cyst = rng.random() < look.cyst
    heterogeneity = rng.lognormal(np.log(look.heterogeneity[0]), look.heterogeneity[1])
    lobe_amplitude = rng.uniform(*look.lobulation)
    radius = float(np.clip(radius, 6.0, max_radius))
    lobes = rng.normal(size=(3, 3))
    cyst = None
    if has_cyst:
        direction = rng.normal(size=3)
        cyst_radius = radius * rng.uniform(0.35, 0.65)
        cyst = ((direction / np.linalg.norm(direction) * (radius - cyst_radius) * rng.uniform(0.2, 0.8)).astype(np.float32), float(cyst_radius))
    return Lesion(
        label=look.name,
        label_index=index,
        location=where.location,
        location_phrase=where.phrase,
        site=site,
        centre=(np.array(centre) + rng.normal(0.0, 3.0, 3)).astype(np.float32),
        radius=radius,
        axes=rng.uniform(0.8, 1.2, 3).astype(np.float32),
        lobes=(lobes / np.linalg.norm(lobes, axis=1, keepdims=True)).astype(np.float32),
        lobe_amplitude=float(lobe_amplitude),
        margin_mm=float(np.clip(margin, 0.4, 5.0)),
        cyst=cyst,
        heterogeneity=float(np.clip(heterogeneity, 0.01, 0.3)),
        intensity=float(rng.normal(0.9, 0.05)),
    )


def paint_lesion(image: np.ndarray, brain: np.ndarray, q: np.ndarray, lesion: Lesion,
                 rng: np.random.Generator, width: float) -> np.ndarray:
    """Paint ``lesion`` into ``image`` (in place) and return its boolean mask (never empty).

    Work is confined to the voxels within reach of the lesion, which keeps a study's cost
    dominated by the head, not the lesion.
    """
    reach = lesion.radius * (1.3 + lesion.lobe_amplitude) + 4.0 * lesion.margin_mm
    offset = q - lesion.centre
    near = np.abs(offset).max(axis=-1) < reach
    d = offset[near] / lesion.axes
    r = np.linalg.norm(d, axis=-1) + 1e-6
    unit = d / r[:, None]
    boundary = lesion.radius * (1.0 + lesion.lobe_amplitude * ((unit @ lesion.lobes.T) ** 2 - 1.0 / 3.0).sum(axis=-1))
    depth = boundary - r
    inside = soft(depth, max(lesion.margin_mm, width)) * brain[near]
    grid = rng.normal(0.0, 1.0, (12, 12, 12)).astype(np.float32)
    coords = (offset[near] / (2.0 * reach) + 0.5).T * 11.0
    texture = map_coordinates(grid, coords, order=3, mode="nearest")
    values = lesion.intensity + lesion.heterogeneity * texture
    if lesion.cyst is not None:
        cyst_centre, cyst_radius = lesion.cyst
        cyst_depth = cyst_radius - np.linalg.norm(offset[near] - cyst_centre, axis=-1)
        values = lerp(values, 0.22, soft(cyst_depth, max(width * 0.5, 0.4)))
    image[near] = lerp(image[near], values, inside)
    selected = inside >= 0.5
    if not selected.any():  # a lesion smaller than a voxel of a coarse grid still marks its voxel
        selected[np.argmax(inside)] = True
    mask = np.zeros(image.shape, dtype=bool)
    mask[near] = selected
    return mask
