"""Where a lesion is, which molecular-like class it has, and what it looks like.

Priors mirror paediatric low-grade glioma: BRAF fusion is mostly infratentorial (cerebellar,
pilocytic-like: circumscribed, often cystic, larger), BRAF V600E mostly supratentorial
(hemispheric: ill-defined margin, heterogeneous, less often cystic). Every appearance parameter
is drawn from overlapping class-conditional distributions, so the class is learnable from the
image but not separable: a good model gets a high, not perfect, AUC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from training.cohort import CLASS_NAMES, LOCATIONS
from training.cohort.phantom import lerp, soft

LOCATION_PRIOR = {"supratentorial": 0.50, "infratentorial": 0.35, "transtentorial": 0.15}
# P(BRAF-fusion | location); the rest is BRAF-V600E.
FUSION_PRIOR = {"supratentorial": 0.30, "infratentorial": 0.85, "transtentorial": 0.55}

# Site -> (location, centre in the subject frame (mm), largest plausible radius (mm)).
SITES: dict[str, tuple[str, tuple[float, float, float], float]] = {
    "left frontal lobe": ("supratentorial", (28.0, -42.0, 26.0), 22.0),
    "right frontal lobe": ("supratentorial", (-28.0, -42.0, 26.0), 22.0),
    "left parietal lobe": ("supratentorial", (30.0, 22.0, 40.0), 20.0),
    "right parietal lobe": ("supratentorial", (-30.0, 22.0, 40.0), 20.0),
    "left temporal lobe": ("supratentorial", (44.0, -8.0, 2.0), 16.0),
    "right temporal lobe": ("supratentorial", (-44.0, -8.0, 2.0), 16.0),
    "left occipital lobe": ("supratentorial", (20.0, 62.0, 14.0), 16.0),
    "right occipital lobe": ("supratentorial", (-20.0, 62.0, 14.0), 16.0),
    "left thalamus": ("supratentorial", (11.0, 8.0, 5.0), 12.0),
    "right thalamus": ("supratentorial", (-11.0, 8.0, 5.0), 12.0),
    "suprasellar region": ("supratentorial", (0.0, -12.0, -2.0), 13.0),
    "cerebellar vermis": ("infratentorial", (0.0, 44.0, -30.0), 18.0),
    "left cerebellar hemisphere": ("infratentorial", (26.0, 46.0, -38.0), 18.0),
    "right cerebellar hemisphere": ("infratentorial", (-26.0, 46.0, -38.0), 18.0),
    "pons": ("infratentorial", (0.0, 10.0, -38.0), 10.0),
    "medulla": ("infratentorial", (0.0, 12.0, -62.0), 8.0),
    # Transtentorial sites sit on the tentorium (phantom.Head.tentorium), so the lesion crosses it.
    "midbrain and left thalamus": ("transtentorial", (7.0, 10.0, -12.0), 15.0),
    "midbrain and right thalamus": ("transtentorial", (-7.0, 10.0, -12.0), 15.0),
    "tectal plate and superior vermis": ("transtentorial", (0.0, 24.0, -18.0), 15.0),
    "left mesial temporal lobe and cerebellum": ("transtentorial", (24.0, 30.0, -22.0), 16.0),
}
# Within a location, sites are equally likely except where the disease has favourites.
SITE_WEIGHT = {"cerebellar vermis": 2.0, "left cerebellar hemisphere": 1.5, "right cerebellar hemisphere": 1.5,
               "left thalamus": 0.6, "right thalamus": 0.6}


@dataclass(frozen=True)
class Lesion:
    label: str
    location: str
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
    def label_index(self) -> int:
        return CLASS_NAMES.index(self.label)


def sample_lesion(rng: np.random.Generator) -> Lesion:
    location = str(rng.choice(LOCATIONS, p=[LOCATION_PRIOR[name] for name in LOCATIONS]))
    names = [name for name, (loc, _, _) in SITES.items() if loc == location]
    weights = np.array([SITE_WEIGHT.get(name, 1.0) for name in names])
    site = str(rng.choice(names, p=weights / weights.sum()))
    fusion = rng.random() < FUSION_PRIOR[location]
    _, centre, max_radius = SITES[site]
    if fusion:
        radius = rng.normal(16.0, 4.0)
        margin = rng.lognormal(np.log(1.1), 0.45)
        has_cyst = rng.random() < 0.65
        heterogeneity = rng.lognormal(np.log(0.05), 0.5)
        lobe_amplitude = rng.uniform(0.0, 0.18)
    else:
        radius = rng.normal(13.0, 4.0)
        margin = rng.lognormal(np.log(2.6), 0.4)
        has_cyst = rng.random() < 0.25
        heterogeneity = rng.lognormal(np.log(0.12), 0.5)
        lobe_amplitude = rng.uniform(0.08, 0.32)
    radius = float(np.clip(radius, 6.0, max_radius))
    lobes = rng.normal(size=(3, 3))
    cyst = None
    if has_cyst:
        direction = rng.normal(size=3)
        cyst_radius = radius * rng.uniform(0.35, 0.65)
        cyst = ((direction / np.linalg.norm(direction) * (radius - cyst_radius) * rng.uniform(0.2, 0.8)).astype(np.float32), float(cyst_radius))
    return Lesion(
        label=CLASS_NAMES[0] if fusion else CLASS_NAMES[1],
        location=location,
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
