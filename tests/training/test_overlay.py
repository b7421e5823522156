"""core.preprocess.overlay_map: the rules that turn a model's attention into the delivered overlay."""

from __future__ import annotations

import numpy as np
import pytest

from radpair.core.model_card import OperatingPoints
from radpair.core.preprocess import hyperintensity, overlay_map
from radpair.core.task import load_task


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A brain of noisy tissue with a bright lesion, a bright structure elsewhere (as CSF on T2),
    and an attention map that covers the lesion and its surroundings but not that structure."""
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 1.0, (24, 24, 24)).astype(np.float32)
    brain = np.zeros(image.shape, bool)
    brain[2:22, 2:22, 2:22] = True
    lesion = np.zeros(image.shape, bool)
    lesion[6:9, 6:9, 6:9] = True
    image[lesion] += 6.0
    image[16:19, 16:19, 16:19] += 6.0  # bright, not attended
    attention = np.zeros(image.shape, np.float32)
    attention[3:13, 3:13, 3:13] = 1.0  # a coarse cell around the lesion
    return image, brain, attention, lesion


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def test_hyperintense_rule_delineates_the_attended_lesion_and_ignores_the_unattended_bright_structure() -> None:
    image, brain, attention, lesion = _scene()
    plain = overlay_map(attention, brain, image, "attention")
    refined = overlay_map(attention, brain, image, "attention-hyperintense")
    assert refined.max() == pytest.approx(1.0) and refined[~brain].max() == 0.0
    assert _dice(refined >= 0.5, lesion) > 0.8
    assert _dice(plain >= 0.5, lesion) < 0.1  # the whole cell: 27 lesion voxels in 1000
    assert refined[16:19, 16:19, 16:19].max() == 0.0  # bright, but the model did not attend to it
    assert np.array_equal(plain, overlay_map(attention, brain))  # the default is the attention alone


def test_hyperintensity_is_zero_at_or_below_the_brain_median() -> None:
    image, brain, _attention, lesion = _scene()
    z = hyperintensity(image, brain)
    assert z[lesion].min() > 3.0 and z[~brain].max() == 0.0 and z.min() == 0.0
    assert float((z[brain] == 0).mean()) == pytest.approx(0.5, abs=0.01)  # the half at or below the median


def test_unknown_rule_and_missing_image_are_refused() -> None:
    image, brain, attention, _lesion = _scene()
    with pytest.raises(ValueError, match="unknown overlay rule"):
        overlay_map(attention, brain, image, "saliency")
    with pytest.raises(ValueError, match="needs the image"):
        overlay_map(attention, brain, None, "attention-hyperintense")


def test_the_rule_travels_in_the_operating_points_and_old_cards_mean_attention() -> None:
    assert OperatingPoints.from_dict({"lesion_threshold": 0.6, "attention_threshold": 0.3}).overlay == "attention"
    points = OperatingPoints.from_dict({"attention_threshold": "0.3", "overlay": "attention-hyperintense"})
    assert points.overlay == "attention-hyperintense" and points.attention_threshold == 0.3


def test_the_shipped_task_names_a_hyperintense_finding() -> None:
    assert load_task().finding.overlay_rule == "attention-hyperintense"
