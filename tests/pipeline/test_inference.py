"""Attention geometry: a map on the preprocessed grid lands on the right source pixels.

The "model" here is a deterministic function of the preprocessed volume (it attends to the
brightest voxels, the synthetic lesion), not a Triton stand-in: Triton itself is exercised end to
end in test_e2e.py. It makes the expected result known exactly: the attention mapped back must lie
over the lesion in the source images.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
from monai import transforms as mt
from monai.data import PydicomReader

from radpair.core.preprocess import PreprocessParams
from radpair.pipeline.inference import predict, sample_on_source
from tests.support.dicom import write_head_series


def test_loaded_series_sampled_at_source_pixels_is_the_source(tmp_path: Path) -> None:
    paths = write_head_series(tmp_path / "mr")
    source = [pydicom.dcmread(p) for p in paths]
    loaded = mt.Compose([mt.LoadImage(reader=PydicomReader(), image_only=True), mt.EnsureChannelFirst()])(str(tmp_path / "mr"))
    frames = sample_on_source(loaded, source, order=0)
    for frame, ds in zip(frames, source):
        np.testing.assert_array_equal(frame, ds.pixel_array.astype(np.float32))


def test_predict_maps_attention_back_over_the_source(tmp_path: Path) -> None:
    paths = write_head_series(tmp_path / "mr", slices=16, rows=40, cols=36)
    source = [pydicom.dcmread(p) for p in paths]
    params = PreprocessParams(spacing=(3.0, 3.0, 3.0), spatial_size=(32, 32, 32))

    def identity_model(batch: np.ndarray) -> SimpleNamespace:
        assert batch.shape == (1, 1, 32, 32, 32) and batch.dtype == np.float32
        volume = batch[:, 0]
        attention = (volume >= 0.6 * volume.max()).astype(np.float32)
        return SimpleNamespace(probabilities=np.array([[0.3, 0.7]]), lesion=np.array([[0.9]]), attention=attention,
                               model_version="4")

    pred = predict(tmp_path / "mr", source, params, identity_model, ("first", "second"))
    assert (pred.predicted_class, pred.model_version) == ("second", "4")
    assert (pred.probability, pred.lesion_probability) == (0.7, 0.9)
    assert pred.attention.shape == (16, 40, 36)
    lesion = np.stack([ds.pixel_array for ds in source]) == 1000
    region = pred.attention >= 0.5
    dice = 2 * (lesion & region).sum() / (lesion.sum() + region.sum())
    assert dice > 0.7, dice
    assert set(pred.timings) == {"preprocess", "triton", "invert"}
