"""Training-time augmentation: MONAI's random intensity and spatial transforms on cached volumes.

The intensity transforms span what another scanner changes — contrast curve (gamma), coil shading
(a smooth multiplicative bias field), noise, scale and offset — so that a model is not taught a
site's look; the spatial ones a small rotation, scaling and shift (no flips: left and right are in
the reports). They run on the cached, preprocessed tensors, batch by batch, seeded from an explicit
generator, so a run is reproducible and the DICOM series is never re-read.
"""

from __future__ import annotations

import torch
from monai import transforms as mt


def _pipeline() -> mt.Compose:
    return mt.Compose([
        mt.RandAdjustContrast(prob=0.7, gamma=(0.7, 1.5)),
        mt.RandBiasField(prob=0.5, degree=3, coeff_range=(0.0, 0.3)),
        mt.RandScaleIntensity(factors=0.15, prob=1.0),
        mt.RandShiftIntensity(offsets=0.15, prob=1.0),
        mt.RandGaussianNoise(prob=0.5, std=0.08),
        mt.RandAffine(prob=0.7, rotate_range=(0.12, 0.12, 0.12), scale_range=(0.08, 0.08, 0.08),
                      translate_range=(3, 3, 3), padding_mode="zeros", mode="bilinear"),
    ])


_TRANSFORMS = _pipeline()


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random variant of each volume of the batch ``x`` [B, 1, D, H, W] (same device)."""
    out = []
    for volume in x:
        _TRANSFORMS.set_random_state(seed=int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        out.append(torch.as_tensor(_TRANSFORMS(volume.cpu()), dtype=x.dtype))
    return torch.stack(out).to(x.device)
