"""Run-directory plots: loss curves, ROC curves, attention overlays (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_losses(curves: Mapping[str, Sequence[float]], path: Path, separate: bool = False) -> None:
    """Loss per epoch; ``separate``: one panel per curve (terms of different scale, each readable)."""
    panels = len(curves) if separate else 1
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels if separate else 6, 3.5), squeeze=False)
    for i, (name, values) in enumerate(curves.items()):
        ax = axes[0][i if separate else 0]
        ax.plot(range(1, len(values) + 1), values, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.set_title(name if separate else "", fontsize="small")
        if not separate:
            ax.legend(fontsize="small")
    _save(fig, path)


def plot_roc(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: Path) -> None:
    """One ROC curve per entry: name -> (binary labels, scores)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, scores) in curves.items():
        if len(set(labels)) == 2:
            fpr, tpr, _ = roc_curve(labels, scores)
            ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_overlays(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path,
                  threshold: float | None = None) -> None:
    """Rows of (title, image slice, mask slice, attention slice): the image with the true lesion's
    contour (green), and the attention heat map with, at ``threshold``, the overlay's contour (red)."""
    fig, axes = plt.subplots(len(panels), 2, figsize=(6, 3 * len(panels)), squeeze=False)
    for row, (title, image, mask, attention) in zip(axes, panels):
        for ax in row:
            ax.imshow(image.T, cmap="gray", origin="lower")
            ax.contour(mask.T, levels=[0.5], colors="lime", linewidths=0.8, origin="lower")
            ax.axis("off")
        row[0].set_title(title, fontsize="small")
        row[1].imshow(np.ma.masked_less(attention.T, 0.02), cmap="jet", alpha=0.45, origin="lower", vmin=0, vmax=1)
        if threshold is not None and attention.max() >= threshold:
            row[1].contour(attention.T, levels=[threshold], colors="red", linewidths=0.8, origin="lower")
        row[1].set_title("attention" + (f" (overlay at {threshold:.2f})" if threshold is not None else ""), fontsize="small")
    _save(fig, path)
