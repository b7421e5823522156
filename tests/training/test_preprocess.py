"""core.preprocess: a real DICOM series becomes [1, 64, 64, 64] and maps invert to the source grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import NormalizeIntensity

from radpair.core.preprocess import HeadNormalize, PreprocessParams, _otsu, build_transforms, invert_to_source
from tests.support.dicom import write_series

SHAPE = (20, 40, 48)  # slices, rows, cols
SPACING = (2.5, 1.5, 1.2)


@pytest.fixture(scope="module")
def series_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    volume = np.zeros(SHAPE, np.uint16)
    volume[4:16, 8:32, 10:38] = 800 + rng.integers(0, 200, (12, 24, 28))
    volume[8:12, 14:20, 16:22] = 2000  # a bright block whose position must survive the round trip
    folder = tmp_path_factory.mktemp("series")
    write_series(folder, volume, SPACING)
    return folder


def test_params_json_round_trip():
    params = PreprocessParams(spacing=(2, 2, 2), spatial_size=(32, 32, 32), normalisation="percentile")
    again = PreprocessParams.from_json(params.to_json())
    assert again == params and again.spacing == (2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="unknown"):
        PreprocessParams.from_dict({"spacing": [1, 1, 1], "sizes": [1, 1, 1]})
    with pytest.raises(ValueError, match="spatial_size"):
        PreprocessParams(spatial_size=(64, 64))


def test_series_becomes_normalised_64_cube(series_dir):
    out = build_transforms(PreprocessParams())(str(series_dir))
    assert isinstance(out, MetaTensor)
    assert tuple(out.shape) == (1, 64, 64, 64) and out.dtype == torch.float32
    assert np.allclose(np.abs(np.diag(out.affine.numpy())[:3]), 3.0)
    head = out[out > _otsu(out.numpy())]
    # Normalised on the source's head voxels (zero mean, unit std there); resampling keeps it near that.
    assert abs(float(head.mean())) < 0.3 and 0.6 < float(head.std()) < 1.4


def test_head_normalisation_ignores_how_much_noisy_air_the_field_of_view_holds():
    """An MR background is noise, not zero: a larger field of view (more air) moved every value of
    the non-zero z-score, which a model then reads as a different scanner. The head z-score does not move."""
    rng = np.random.default_rng(0)
    head = np.zeros((40, 40, 40), np.float32)
    head[10:30, 10:30, 10:30] = 1000.0 + 50.0 * rng.standard_normal((20, 20, 20))
    small = np.abs(head + 20.0 * rng.standard_normal(head.shape)).astype(np.float32)
    large = np.abs(np.pad(head, 20) + 20.0 * rng.standard_normal((80, 80, 80))).astype(np.float32)
    inside = (slice(15, 25),) * 3
    inside_large = (slice(35, 45),) * 3

    def brain(normaliser, volume, where):
        return float(normaliser(torch.as_tensor(volume)[None])[0][where].mean())

    nonzero = NormalizeIntensity(nonzero=True, channel_wise=True)
    assert abs(brain(nonzero, small, inside) - brain(nonzero, large, inside_large)) > 0.5
    assert abs(brain(HeadNormalize(), small, inside) - brain(HeadNormalize(), large, inside_large)) < 0.05


def test_percentile_normalisation_is_in_unit_range(series_dir):
    out = build_transforms(PreprocessParams(normalisation="percentile"))(str(series_dir))
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0


def test_map_inverts_to_source_grid(series_dir):
    params = PreprocessParams(spacing=(1.5, 1.5, 1.5), spatial_size=(64, 64, 64))
    transforms = build_transforms(params)
    source = transforms.transforms[0](str(series_dir))  # the loaded series, before any step
    out = transforms(str(series_dir))
    # A map that marks the bright block on the preprocessed grid...
    bright = (out[0] > out[0].max() * 0.9).float()
    back = invert_to_source(bright, out, transforms, mode="nearest")
    assert tuple(back.shape[1:]) == tuple(source.shape)
    assert np.allclose(back.affine.numpy(), source.affine.numpy(), atol=1e-4)
    # ...lands on the block in the source volume.
    truth = torch.as_tensor(np.asarray(source) >= 2000).float()
    inter = float((back[0] * truth).sum())
    dice = 2 * inter / float(back[0].sum() + truth.sum())
    assert dice > 0.7, dice
