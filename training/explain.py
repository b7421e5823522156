"""Explainability scores: the overlay a study would get, against its ground-truth lesion mask.

The overlay is what the pipeline delivers: the model's attention (for a hyperintense finding,
the attended hyperintense signal) restricted to the brain
(:func:`radpair.core.preprocess.overlay_map`), scaled to its maximum there, binarised at a
threshold. It is compared with the mask in 3D and on the axial slice with the largest lesion
cross-section (2D, the paper's measure). Volumes are RAS-oriented ``[D, H, W]`` arrays, so axial
slices are indexed by the last axis. The threshold is chosen on internal folds
(:func:`best_threshold`); the Dice at the best threshold *for the set being scored* (the
"oracle") says what the chosen threshold costs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLDS = np.round(np.arange(0.05, 1.0, 0.05), 2)


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary arrays; 1.0 when both are empty (nothing to find, nothing found)."""
    p, t = prediction.astype(bool), truth.astype(bool)
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


def largest_lesion_slice(mask: np.ndarray) -> int:
    """Index (last axis) of the axial slice with the largest lesion cross-section."""
    return int(np.asarray(mask).reshape(-1, mask.shape[-1]).sum(0).argmax())


def overlay_dice(overlay: np.ndarray, mask: np.ndarray, threshold: float) -> tuple[float, float]:
    """(2D Dice on the largest-lesion slice, 3D Dice) of ``overlay >= threshold`` vs ``mask``."""
    binary = overlay >= threshold
    truth = np.asarray(mask) > 0.5
    k = largest_lesion_slice(truth)
    return dice(binary[..., k], truth[..., k]), dice(binary, truth)


def dice_curve(pairs: Sequence[tuple[np.ndarray, np.ndarray]], thresholds: Sequence[float] = THRESHOLDS) -> np.ndarray:
    """Mean (2D, 3D) Dice over ``(overlay, mask)`` pairs at each threshold: ``[len(thresholds), 2]``."""
    if not pairs:
        return np.full((len(thresholds), 2), np.nan)
    return np.array([[np.mean(v) for v in zip(*(overlay_dice(o, m, t) for o, m in pairs))] for t in thresholds])


def best_threshold(pairs: Sequence[tuple[np.ndarray, np.ndarray]], thresholds: Sequence[float] = THRESHOLDS) -> float:
    """The threshold with the best mean 2D Dice over ``pairs`` (0.5 when there is nothing to score)."""
    if not pairs:
        return 0.5
    return float(thresholds[int(np.nanargmax(dice_curve(pairs, thresholds)[:, 0]))])
