"""The one preprocessing definition shared by training and inference.

A DICOM series folder becomes a float32 MetaTensor ``[1, D, H, W]``: loaded with MONAI's
``PydicomReader`` (affine in RAS), reoriented, resampled to a target spacing, padded/cropped to a
fixed size and intensity-normalised. It lives in ``core`` so the inference pipeline uses exactly
what the model was trained with without importing training's networks; its parameters travel
next to every exported model as ``preprocess.json``.

The spatial steps are MONAI invertible transforms, so a map computed on the preprocessed grid
(e.g. the classifier's attention) is brought back to the source series grid with
:func:`invert_to_source`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from monai import transforms as mt
from monai.data import MetaTensor, PydicomReader

Normalisation = Literal["zscore", "percentile"]


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that decides what the network sees; saved as ``preprocess.json``."""

    # Millimetres per voxel after resampling, in the array axis order of the RAS-oriented volume.
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    spatial_size: tuple[int, int, int] = (64, 64, 64)
    orientation: str = "RAS"
    # "zscore": mean/std over non-zero voxels (background stays 0); "percentile": map the
    # [lower, upper] percentiles to [0, 1] and clip. Both ignore the scanner's intensity scale.
    normalisation: Normalisation = "zscore"
    lower_percentile: float = 1.0
    upper_percentile: float = 99.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "spatial_size", tuple(int(s) for s in self.spatial_size))
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")
        if len(self.spatial_size) != 3 or min(self.spatial_size) <= 0:
            raise ValueError(f"spatial_size must be three positive integers, got {self.spatial_size}")
        if self.normalisation not in ("zscore", "percentile"):
            raise ValueError(f"normalisation must be 'zscore' or 'percentile', got {self.normalisation!r}")
        if not 0 <= self.lower_percentile < self.upper_percentile <= 100:
            raise ValueError("percentiles must satisfy 0 <= lower_percentile < upper_percentile <= 100")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PreprocessParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocess parameter(s): {', '.join(sorted(unknown))}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "PreprocessParams":
        return cls.from_dict(json.loads(text))


def _steps(params: PreprocessParams, image_key: str | None, mask_keys: Sequence[str]) -> list:
    """The transform list, as array transforms (``image_key`` None) or dictionary transforms.

    One definition for both forms so training (image + masks) and inference (image only) cannot
    drift apart. Intensities are normalised on the source voxels, before resampling and padding,
    so the statistics do not depend on how much of the field of view is padding. Masks use
    nearest-neighbour resampling and are not intensity-normalised.
    """
    if image_key is None:
        return [
            mt.LoadImage(reader=PydicomReader(), image_only=True),
            mt.EnsureChannelFirst(),
            _normaliser(params, None),
            mt.Orientation(axcodes=params.orientation),
            mt.Spacing(pixdim=params.spacing, mode="bilinear"),
            mt.ResizeWithPadOrCrop(spatial_size=params.spatial_size),
            mt.EnsureType(data_type="tensor", dtype=torch.float32),
        ]
    keys = [image_key, *mask_keys]
    modes = ["bilinear"] + ["nearest"] * len(mask_keys)
    steps: list = [mt.LoadImaged(keys=image_key, reader=PydicomReader(), image_only=True)]
    if mask_keys:
        steps.append(mt.LoadImaged(keys=list(mask_keys), image_only=True))
    steps += [
        mt.EnsureChannelFirstd(keys=keys),
        _normaliser(params, image_key),
        mt.Orientationd(keys=keys, axcodes=params.orientation),
        mt.Spacingd(keys=keys, pixdim=params.spacing, mode=modes),
        mt.ResizeWithPadOrCropd(keys=keys, spatial_size=params.spatial_size),
        mt.EnsureTyped(keys=keys, data_type="tensor", dtype=torch.float32),
    ]
    return steps


def _normaliser(params: PreprocessParams, key: str | None) -> mt.Transform:
    if params.normalisation == "zscore":
        if key is None:
            return mt.NormalizeIntensity(nonzero=True, channel_wise=True)
        return mt.NormalizeIntensityd(keys=key, nonzero=True, channel_wise=True)
    kwargs = dict(lower=params.lower_percentile, upper=params.upper_percentile, b_min=0.0, b_max=1.0, clip=True)
    if key is None:
        return mt.ScaleIntensityRangePercentiles(**kwargs)
    return mt.ScaleIntensityRangePercentilesd(keys=key, **kwargs)


def build_transforms(params: PreprocessParams) -> mt.Compose:
    """Series folder (path) -> MetaTensor ``[1, D, H, W]`` float32 carrying its applied operations."""
    return mt.Compose(_steps(params, None, ()))


def build_paired_transforms(
    params: PreprocessParams, image_key: str = "image", mask_keys: Sequence[str] = ("mask",)
) -> mt.Compose:
    """Dictionary form for training/evaluation: the series and its masks (NIfTI) on the same grid."""
    return mt.Compose(_steps(params, image_key, tuple(mask_keys)))


def invert_to_source(
    volume_map: torch.Tensor, preprocessed: MetaTensor, transforms: mt.Compose, mode: str = "bilinear"
) -> MetaTensor:
    """Bring a map on the preprocessed grid (``[D, H, W]`` or ``[1, D, H, W]``) back to the source grid.

    ``preprocessed`` is what ``transforms`` returned for the series; its recorded operations are
    undone in reverse order, so the result has the shape and affine of the loaded source series
    (``[1, ...]``, RAS affine as MONAI's ``PydicomReader`` gives it). ``mode`` is the resampling
    mode for the undo (``"nearest"`` for label maps).
    """
    data = volume_map if volume_map.ndim == 4 else volume_map.unsqueeze(0)
    carrier = MetaTensor(
        torch.as_tensor(data, dtype=torch.float32).detach().cpu(),
        affine=preprocessed.affine.clone(),
        meta=dict(preprocessed.meta),
        applied_operations=[_with_mode(op, mode) for op in preprocessed.applied_operations],
    )
    with torch.no_grad():
        return transforms.inverse(carrier)


def _with_mode(op: dict, mode: str) -> dict:
    """A copy of a recorded operation whose resampling mode (if any) is ``mode``."""
    op = dict(op)
    extra = op.get("extra_info")
    if isinstance(extra, dict) and "mode" in extra:
        op["extra_info"] = {**extra, "mode": mode}
    return op
