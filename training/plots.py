"""Run-directory plots: loss curves, ROC curves, attention overlays (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402


def plot_losses(curves: Mapping[str, Sequence[float]], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_roc(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]], path: Path) -> None:
    """One ROC curve per entry: name -> (labels, class-1 probabilities)."""
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (labels, scores) in curves.items():
        if len(set(labels)) == 2:
            fpr, tpr, _ = roc_curve(labels, scores)
            ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_overlays(panels: Sequence[tuple[str, np.ndarray, np.ndarray, np.ndarray]], path: Path) -> None:
    """Rows of (title, image slice, mask slice, attention slice): image, mask contour, attention heat."""
    fig, axes = plt.subplots(len(panels), 2, figsize=(6, 3 * len(panels)), squeeze=False)
    for row, (title, image, mask, attention) in zip(axes, panels):
        for ax in row:
            ax.imshow(image.T, cmap="gray", origin="lower")
            ax.contour(mask.T, levels=[0.5], colors="lime", linewidths=0.8, origin="lower")
            ax.axis("off")
        row[0].set_title(title, fontsize="small")
        row[1].imshow(attention.T, cmap="jet", alpha=0.45, origin="lower", vmin=0, vmax=1)
        row[1].set_title("attention", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
