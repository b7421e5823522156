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
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import torch
from monai import transforms as mt
from monai.data import MetaTensor, PydicomReader

# MONAI builds every reader it knows for each LoadImage, and its optional GPU decoder reader
# (nvImageCodec) warns, twice, that it is not installed; radpair decodes with pydicom.
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)

Normalisation = Literal["head_zscore", "zscore", "percentile"]


@dataclass(frozen=True)
class PreprocessParams:
    """Everything that decides what the network sees; saved as ``preprocess.json``."""

    # Millimetres per voxel after resampling, in the array axis order of the RAS-oriented volume.
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    spatial_size: tuple[int, int, int] = (64, 64, 64)
    orientation: str = "RAS"
    # "head_zscore": mean/std over the head (voxels above the Otsu threshold), so neither the
    # scanner's intensity scale nor how much noisy air the field of view holds moves the brain's
    # values; "zscore": mean/std over non-zero voxels (an MR background is noise, not zero, so a
    # larger field of view shifts every value); "percentile": map the [lower, upper] percentiles
    # to [0, 1] and clip.
    normalisation: Normalisation = "head_zscore"
    lower_percentile: float = 1.0
    upper_percentile: float = 99.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "spatial_size", tuple(int(s) for s in self.spatial_size))
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers, got {self.spacing}")
        if len(self.spatial_size) != 3 or min(self.spatial_size) <= 0:
            raise ValueError(f"spatial_size must be three positive integers, got {self.spatial_size}")
        if self.normalisation not in ("head_zscore", "zscore", "percentile"):
            raise ValueError(f"normalisation must be 'head_zscore', 'zscore' or 'percentile', got {self.normalisation!r}")
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
    drift apart. The non-zero z-score and the percentiles are taken on the source voxels, before
    resampling and padding, so they do not depend on how much of the field of view is padding; the
    head z-score comes last, where its statistics (head voxels only) ignore the padding and the
    padding lands where the air does. Masks use nearest-neighbour resampling and are not
    intensity-normalised.
    """
    late = params.normalisation == "head_zscore"
    if image_key is None:
        spatial = [mt.Orientation(axcodes=params.orientation), mt.Spacing(pixdim=params.spacing, mode="bilinear"),
                   mt.ResizeWithPadOrCrop(spatial_size=params.spatial_size)]
        normaliser = [_normaliser(params, None)]
        return [
            mt.LoadImage(reader=PydicomReader(), image_only=True),
            mt.EnsureChannelFirst(),
            *(spatial + normaliser if late else normaliser + spatial),
            mt.EnsureType(data_type="tensor", dtype=torch.float32),
        ]
    keys = [image_key, *mask_keys]
    modes = ["bilinear"] + ["nearest"] * len(mask_keys)
    steps: list = [mt.LoadImaged(keys=image_key, reader=PydicomReader(), image_only=True)]
    if mask_keys:
        steps.append(mt.LoadImaged(keys=list(mask_keys), image_only=True))
    spatial = [mt.Orientationd(keys=keys, axcodes=params.orientation),
               mt.Spacingd(keys=keys, pixdim=params.spacing, mode=modes),
               mt.ResizeWithPadOrCropd(keys=keys, spatial_size=params.spatial_size)]
    normaliser = [_normaliser(params, image_key)]
    steps += [
        mt.EnsureChannelFirstd(keys=keys),
        *(spatial + normaliser if late else normaliser + spatial),
        mt.EnsureTyped(keys=keys, data_type="tensor", dtype=torch.float32),
    ]
    return steps


class HeadNormalize(mt.Transform):
    """Z-score an image on its head voxels (above the Otsu threshold); the air keeps its offset."""

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        import numpy as np

        values = np.asarray(img.detach().cpu(), dtype=np.float64)
        head = values > _otsu(values)
        if head.sum() < 2:
            return img
        return (img - float(values[head].mean())) / max(float(values[head].std()), 1e-8)


class HeadNormalized(mt.MapTransform):
    """Dictionary form of :class:`HeadNormalize`."""

    def __call__(self, data: dict) -> dict:
        out = dict(data)
        for key in self.key_iterator(out):
            out[key] = HeadNormalize()(out[key])
        return out


def _normaliser(params: PreprocessParams, key: str | None) -> mt.Transform:
    if params.normalisation == "head_zscore":
        return HeadNormalize() if key is None else HeadNormalized(keys=key)
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


# Scalp and skull are about this thick: the brain lies at least this deep inside the head.
BRAIN_EROSION_MM = 10.0


def brain_mask(volume: Any, spacing: Sequence[float], erosion_mm: float = BRAIN_EROSION_MM) -> Any:
    """Where the brain can be in a head volume ``[D, H, W]``: the head (Otsu foreground, closed,
    holes filled, largest component) minus its outer ``erosion_mm``. Training scores attention
    inside it and the pipeline's overlay is restricted to it, both on the preprocessed grid."""
    import numpy as np
    from scipy import ndimage

    v = np.asarray(volume, dtype=np.float64)
    head = v > _otsu(v)
    head = ndimage.binary_fill_holes(ndimage.binary_closing(head, iterations=2))
    labels, count = ndimage.label(head)
    if count == 0:
        return np.zeros(v.shape, dtype=bool)
    head = labels == (int(np.argmax(np.bincount(labels.ravel())[1:])) + 1)
    brain = ndimage.distance_transform_edt(head, sampling=tuple(float(s) for s in spacing)) > erosion_mm
    # Too small to have a skull this thick (a phantom, a partial field of view): the head itself.
    return brain if brain.any() else head


# How an overlay is made from the attention (a model's operating points name one):
# "attention": the attention inside the brain;
# "attention-hyperintense": the attention selects, the image's hyperintensity delineates — for a
# finding that is brighter than the brain on the analysed series (task file: finding.signal).
OVERLAY_RULES = ("attention", "attention-hyperintense")


def hyperintensity(image: Any, brain: Any) -> Any:
    """How far each brain voxel lies above the brain's median intensity, in robust standard
    deviations (1.4826 × MAD); 0 at or below the median and outside the brain."""
    import numpy as np

    image = np.asarray(image, dtype=np.float32)
    inside = image[brain]
    if inside.size == 0:
        return np.zeros_like(image)
    median = float(np.median(inside))
    scale = 1.4826 * float(np.median(np.abs(inside - median))) + 1e-6
    return np.where(brain, np.clip((image - median) / scale, 0.0, None), 0.0).astype(np.float32)


def overlay_map(attention: Any, brain: Any, image: Any = None, rule: str = "attention") -> Any:
    """The overlay the pipeline thresholds and training scores, on the preprocessed grid: by
    ``rule`` (:data:`OVERLAY_RULES`), inside the ``brain`` mask, scaled so its maximum there is 1.

    With "attention-hyperintense" the square root of the scaled attention (it picks a region, it
    should not sharpen one) weights the ``image``'s :func:`hyperintensity`: an attended voxel of
    ordinary signal and a bright voxel the model did not attend to both stay low."""
    import numpy as np

    if rule not in OVERLAY_RULES:
        raise ValueError(f"unknown overlay rule {rule!r}; expected one of {', '.join(OVERLAY_RULES)}")
    inside = _scaled(np.where(brain, np.asarray(attention, dtype=np.float32), 0.0))
    if rule == "attention-hyperintense":
        if image is None:
            raise ValueError("the overlay rule 'attention-hyperintense' needs the image")
        inside = _scaled(np.sqrt(inside) * hyperintensity(image, brain))
    return inside


def _scaled(values: Any) -> Any:
    peak = float(values.max())
    return values / peak if peak > 0 else values


def _otsu(values: Any, bins: int = 256) -> float:
    """The threshold that best splits ``values`` into two classes (Otsu's between-class variance)."""
    import numpy as np

    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centres)
    total, total_mean = weight[-1], mean[-1]
    between = (total_mean * weight - mean * total) ** 2 / np.maximum(weight * (total - weight), 1e-12)
    return float(centres[int(np.argmax(between[:-1]))])
