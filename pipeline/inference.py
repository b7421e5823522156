"""One series through the model: preprocess (as the model was trained), Triton, overlay back on the source.

The volume is built by :mod:`core.preprocess` with the serving model version's own
``preprocess.json``. The attention map comes back on the preprocessed grid, where it becomes the
overlay by the model card's rule (the attention, or the attended hyperintense signal), restricted
to the brain and scaled to its maximum there (:func:`core.preprocess.overlay_map`, exactly what
training scored and chose the overlay threshold on); MONAI's recorded inverse (:func:`core.preprocess.invert_to_source`) undoes crop/pad, resampling and reorientation,
and the result is then sampled at every source pixel's patient position, so frame ``i`` of the
returned map lies exactly over ``source[i]`` whatever the slice order or orientation.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from pydicom import Dataset
from scipy.ndimage import map_coordinates

from radpair.core.preprocess import PreprocessParams, brain_mask, build_transforms, invert_to_source, overlay_map


@dataclass(frozen=True)
class Prediction:
    class_names: tuple[str, ...]
    probabilities: np.ndarray
    predicted_class: str
    probability: float
    # The model's probability that the study shows a lesion at all.
    lesion_probability: float
    # The overlay: float32 [len(source), rows, cols] in [0, 1], 0 outside the brain; frame i over source[i].
    attention: np.ndarray
    model_version: str
    # Seconds per stage: "preprocess", "triton", "invert".
    timings: dict[str, float] = field(default_factory=dict)


def pixel_positions_ras(ds: Dataset) -> np.ndarray:
    """RAS world coordinates (mm) of every pixel centre of one image, shape [rows, cols, 3]."""
    origin = np.asarray(ds.ImagePositionPatient, float)
    iop = np.asarray(ds.ImageOrientationPatient, float)
    row_dir, col_dir = iop[:3], iop[3:]
    row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
    r = np.arange(int(ds.Rows))[:, None, None]
    c = np.arange(int(ds.Columns))[None, :, None]
    lps = origin + c * col_spacing * row_dir + r * row_spacing * col_dir
    return lps * np.array([-1.0, -1.0, 1.0])


def sample_on_source(volume: MetaTensor, source: Sequence[Dataset], order: int = 1) -> np.ndarray:
    """Sample a ``[1, I, J, K]`` MetaTensor (RAS affine) at every pixel of ``source``: [n, rows, cols]."""
    data = volume[0].detach().cpu().numpy().astype(np.float32)
    world_to_voxel = np.linalg.inv(np.asarray(volume.affine, float))
    frames = []
    for ds in source:
        world = pixel_positions_ras(ds)
        voxel = world @ world_to_voxel[:3, :3].T + world_to_voxel[:3, 3]
        frames.append(map_coordinates(data, np.moveaxis(voxel, -1, 0), order=order, mode="nearest"))
    return np.stack(frames).astype(np.float32)


def predict(
    series_dir: Path,
    source: Sequence[Dataset],
    params: PreprocessParams,
    infer: Callable[[np.ndarray], Any],
    class_names: Sequence[str],
    overlay: str = "attention",
) -> Prediction:
    """Run ``infer`` (``TritonClient.infer``) on the series in ``series_dir``.

    ``infer`` takes a float32 ``[1, 1, D, H, W]`` batch and returns an object with
    ``probabilities``, ``lesion``, ``attention`` (batched) and ``model_version``; ``overlay`` is
    the model's overlay rule (its operating points).
    """
    timings = {}
    start = time.perf_counter()
    transforms = build_transforms(params)
    volume: MetaTensor = transforms(str(series_dir))
    timings["preprocess"] = time.perf_counter() - start

    start = time.perf_counter()
    result = infer(volume.detach().cpu().numpy()[None].astype(np.float32))
    timings["triton"] = time.perf_counter() - start

    start = time.perf_counter()
    image = volume[0].detach().cpu().numpy()
    brain = brain_mask(image, params.spacing)
    attention = torch.as_tensor(overlay_map(np.asarray(result.attention)[0], brain, image, overlay), dtype=torch.float32)
    on_source = sample_on_source(invert_to_source(attention, volume, transforms), source)
    timings["invert"] = time.perf_counter() - start

    probabilities = np.asarray(result.probabilities, dtype=np.float64).reshape(-1, len(class_names))[0]
    best = int(probabilities.argmax())
    return Prediction(
        class_names=tuple(class_names),
        probabilities=probabilities,
        predicted_class=class_names[best],
        probability=float(probabilities[best]),
        lesion_probability=float(np.asarray(result.lesion, dtype=np.float64).reshape(-1)[0]),
        attention=np.clip(on_source, 0.0, 1.0),
        model_version=str(result.model_version),
        timings=timings,
    )
