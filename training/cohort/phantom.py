"""A FLAIR-like head phantom evaluated at arbitrary patient coordinates (mm, DICOM LPS).

Anatomy is defined analytically in a subject frame (x to the patient's left, y posterior,
z superior, origin near the centre of the head), so any voxel grid — other spacing, field of view,
slice order or orientation under a shift — samples the same head. Boundaries are soft (a
logistic of an approximate signed distance, about one voxel wide) so that partial volume looks
like a real acquisition instead of aliased staircases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

# The phantom's atlas of lesion sites: name -> (compartment, centre in the subject frame (mm),
# largest plausible radius (mm)). A task's cohort section picks its locations' sites from here.
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
    # Transtentorial sites sit on the tentorium (Head.tentorium), so the lesion crosses it.
    "midbrain and left thalamus": ("transtentorial", (7.0, 10.0, -12.0), 15.0),
    "midbrain and right thalamus": ("transtentorial", (-7.0, 10.0, -12.0), 15.0),
    "tectal plate and superior vermis": ("transtentorial", (0.0, 24.0, -18.0), 15.0),
    "left mesial temporal lobe and cerebellum": ("transtentorial", (24.0, 30.0, -22.0), 16.0),
}


def reaches_posterior_fossa(site: str) -> bool:
    """Whether a lesion at ``site`` reaches below the tentorium (infra- or transtentorial)."""
    return SITES[site][0] != "supratentorial"


# FLAIR-like relative intensities: CSF suppressed, grey matter a little brighter than white.
CSF, WM, GM, SCALP, BONE, SKULL_BASE, BRAINSTEM = 0.05, 0.46, 0.66, 0.55, 0.04, 0.18, 0.52


def soft(distance_inside: np.ndarray, width: float) -> np.ndarray:
    """Membership in [0, 1] from a signed distance (mm, positive inside)."""
    return expit(distance_inside / width).astype(np.float32)


def ellipsoid_depth(q: np.ndarray, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Approximate signed distance (mm) into an ellipsoid, positive inside."""
    norm = np.sqrt((((q - centre) / radii) ** 2).sum(axis=-1))
    return (1.0 - norm) * float(radii.min())


def lerp(under: np.ndarray, value: np.ndarray | float, weight: np.ndarray) -> np.ndarray:
    return under + (value - under) * weight


@dataclass(frozen=True)
class Head:
    """One subject's anatomy: size, pose and small shape variations drawn from a seeded RNG."""

    scale: float
    rotation: np.ndarray  # subject -> patient, 3x3
    translation: np.ndarray  # mm
    ventricle_scale: float
    cortex_phase: np.ndarray
    tentorium_height: float

    @classmethod
    def sample(cls, rng: np.random.Generator, age_years: float) -> "Head":
        yaw, pitch, roll = np.deg2rad(rng.normal(0, [3.0, 4.0, 2.0]))
        cz, sz, cy, sy, cx, sx = np.cos(yaw), np.sin(yaw), np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch)
        rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        return cls(
            scale=float(0.84 + 0.16 * min(age_years, 16.0) / 16.0 + rng.normal(0, 0.02)),
            rotation=(rz @ ry @ rx).astype(np.float32),
            translation=rng.normal(0, [2.5, 3.0, 3.0]).astype(np.float32),
            ventricle_scale=float(np.clip(rng.normal(1.0, 0.12), 0.75, 1.35)),
            cortex_phase=rng.uniform(0, 2 * np.pi, 3).astype(np.float32),
            tentorium_height=float(rng.normal(-8.0, 2.0)),
        )

    def to_subject(self, points: np.ndarray) -> np.ndarray:
        """Patient coordinates (mm) -> this subject's anatomical frame (mm, unit head)."""
        return ((points - self.translation) @ self.rotation) / self.scale

    def tentorium(self, q: np.ndarray) -> np.ndarray:
        """Height (mm) of the tentorium cerebelli above each point's (x, y): a tent sloping
        down posteriorly and laterally from the incisura."""
        x, y = q[..., 0], q[..., 1]
        return self.tentorium_height - 0.38 * np.maximum(y + 5.0, 0.0) - 0.004 * x * x

    def render(self, q: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
        """Intensity in [0, 1] and brain-parenchyma membership at subject points ``q`` [..., 3]."""
        x, y, z = q[..., 0], q[..., 1], q[..., 2]
        head_c = np.array([0.0, 5.0, -5.0], np.float32)
        head_r = np.array([74.0, 96.0, 92.0], np.float32)
        head = ellipsoid_depth(q, head_c, head_r)
        image = SCALP * soft(head, width)
        image = lerp(image, BONE, soft(head - 5.0, width))
        inside = soft(head - 11.0, width)  # intracranial space, CSF-filled where nothing else is
        image = lerp(image, CSF, inside)

        below_tent = self.tentorium(q) - z
        # Anterior to the tentorium the cerebrum rests on the skull base: the middle cranial fossa
        # (temporal lobes) low, the anterior fossa (frontal lobes) higher.
        base = -32.0 + 14.0 * expit((-38.0 - y) / 5.0)
        posterior = expit((y + 5.0) / 2.0)
        above_floor = z - (posterior * self.tentorium(q) + (1.0 - posterior) * base)
        image = lerp(image, SKULL_BASE, inside * soft(-above_floor, width) * (1.0 - posterior))

        cerebrum_depth = ellipsoid_depth(q, np.array([0.0, 3.0, 6.0], np.float32), np.array([59.0, 80.0, 74.0], np.float32))
        cerebrum = soft(cerebrum_depth, width) * soft(above_floor - 1.5, width) * inside
        gyri = np.sin(x / 5.0 + self.cortex_phase[0]) * np.sin(y / 6.0 + self.cortex_phase[1]) * np.sin(z / 5.0 + self.cortex_phase[2])
        white = soft(cerebrum_depth - (6.0 + 2.5 * gyri), width)
        image = lerp(image, GM, cerebrum)
        image = lerp(image, WM, cerebrum * white)
        sulci = cerebrum * soft(gyri - 0.35, 0.1) * soft(9.0 - cerebrum_depth, width)
        fissure = soft(1.3 - np.abs(x), width) * soft(z - 14.0, width) * cerebrum
        image = lerp(image, CSF, np.maximum(fissure, sulci))

        fossa = inside * soft(below_tent - 1.5, width) * soft(y + 5.0, width)
        cerebellum_depth = ellipsoid_depth(q, np.array([0.0, 42.0, -38.0], np.float32), np.array([50.0, 36.0, 26.0], np.float32))
        cerebellum = soft(cerebellum_depth, width) * fossa
        image = lerp(image, GM, cerebellum)
        image = lerp(image, WM, cerebellum * soft(cerebellum_depth - 9.0, width))

        stem_depth = np.minimum(
            (1.0 - np.sqrt((x / 13.0) ** 2 + ((y - 10.0) / 11.0) ** 2)) * 11.0,
            np.minimum(z + 95.0, -2.0 - z),
        )
        stem = soft(stem_depth, width) * inside
        image = lerp(image, BRAINSTEM, stem)

        thalami = np.maximum(
            soft(ellipsoid_depth(q, np.array([11.0, 8.0, 3.0], np.float32), np.array([9.0, 12.0, 8.0], np.float32)), width),
            soft(ellipsoid_depth(q, np.array([-11.0, 8.0, 3.0], np.float32), np.array([9.0, 12.0, 8.0], np.float32)), width),
        )
        image = lerp(image, GM - 0.04, thalami)

        v = self.ventricle_scale
        ventricles = np.maximum.reduce([
            soft(ellipsoid_depth(q, np.array([side * 9.0, -2.0, 14.0], np.float32), np.array([5.5 * v, 30.0, 8.0 * v], np.float32)), width)
            for side in (-1.0, 1.0)
        ] + [
            soft(ellipsoid_depth(q, np.array([0.0, 5.0, 1.0], np.float32), np.array([2.0 * v, 10.0, 6.0], np.float32)), width),
            soft(ellipsoid_depth(q, np.array([0.0, 24.0, -33.0], np.float32), np.array([6.0, 3.5 * v, 7.0], np.float32)), width),
        ])
        image = lerp(image, CSF, ventricles)
        brain = np.clip(np.maximum.reduce([cerebrum, cerebellum, stem, thalami]) - ventricles - fissure - sulci, 0.0, 1.0)
        return image.astype(np.float32), brain.astype(np.float32)


def bias_field(q: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative coil shading: exp of a random quadratic polynomial in q / 100 mm."""
    u = q / 100.0
    terms = [u[..., 0], u[..., 1], u[..., 2], u[..., 0] * u[..., 1], u[..., 1] * u[..., 2], u[..., 0] ** 2, u[..., 2] ** 2]
    coefficients = rng.normal(0.0, 1.0, len(terms))
    coefficients *= strength / np.abs(coefficients).sum()
    return np.exp(sum(c * t for c, t in zip(coefficients, terms))).astype(np.float32)


def rician(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise: Rician, as in a real magnitude MR."""
    real = image + rng.normal(0.0, sigma, image.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, image.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary)
