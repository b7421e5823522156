"""Explainability scores: attention maps against ground-truth lesion masks (the paper's Dice).

The attention map (already in [0, 1]) is binarised at a threshold and compared with the mask in
3D and on the axial slice with the largest lesion cross-section (2D). Volumes are RAS-oriented
``[D, H, W]`` arrays, so axial slices are indexed by the last axis.
"""

from __future__ import annotations

import torch


def dice(prediction: torch.Tensor, truth: torch.Tensor) -> float:
    """Dice of two binary tensors; 1.0 when both are empty (nothing to find, nothing found)."""
    p, t = prediction.bool(), truth.bool()
    total = int(p.sum()) + int(t.sum())
    return 1.0 if total == 0 else 2.0 * int((p & t).sum()) / total


def largest_lesion_slice(mask: torch.Tensor) -> int:
    """Index (last axis) of the axial slice with the largest lesion cross-section."""
    return int(mask.reshape(-1, mask.shape[-1]).sum(0).argmax())


def attention_dice(attention: torch.Tensor, mask: torch.Tensor, threshold: float) -> tuple[float, float]:
    """(2D Dice on the largest-lesion slice, 3D Dice) of ``attention >= threshold`` vs ``mask > 0.5``."""
    binary = attention >= threshold
    truth = mask > 0.5
    k = largest_lesion_slice(truth.float())
    return dice(binary[..., k], truth[..., k]), dice(binary, truth)
