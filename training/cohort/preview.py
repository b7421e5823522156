"""A picture of a cohort: for a few studies, the axial and sagittal slices through the lesion
centre with the ground-truth mask outlined (the README's docs/cohort_slices.png)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend must be chosen first
import numpy as np  # noqa: E402
from monai.data import PydicomReader  # noqa: E402
from monai.transforms import LoadImage  # noqa: E402

from radpair.training.cohort import CohortStudy, read_cohort  # noqa: E402


def _slices(study: CohortStudy) -> list[tuple[np.ndarray, np.ndarray]]:
    image = LoadImage(image_only=True, reader=PydicomReader())(str(study.series_dir)).numpy()
    mask = LoadImage(image_only=True)(str(study.mask_path)).numpy() > 0
    if mask.any():
        centre = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
    else:
        centre = np.array(mask.shape) // 2
    # MONAI's array axes are (column: right to left, row: anterior to posterior, slice: up): show
    # radiological views (axial: anterior up, patient right on the left; sagittal: anterior left).
    axial = (image[:, :, centre[2]].T, mask[:, :, centre[2]].T)
    sagittal = (np.rot90(image[centre[0], :, :]), np.rot90(mask[centre[0], :, :]))
    return [axial, sagittal]


def write_preview(folder: str | Path, png: str | Path, count: int = 4) -> Path:
    """Write ``png`` with the first ``count`` lesion studies of the cohort at ``folder``."""
    studies = [s for s in read_cohort(folder) if s.has_lesion][:count]
    fig, axes = plt.subplots(2, len(studies), figsize=(3.2 * len(studies), 6.6), squeeze=False)
    for column, study in enumerate(studies):
        for row, (image, mask) in enumerate(_slices(study)):
            ax = axes[row][column]
            ax.imshow(image, cmap="gray", aspect="auto")
            if mask.any():
                ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.8)
            ax.set_axis_off()
        axes[0][column].set_title(f"{study.site}\n{study.label} ({study.location})", fontsize=8)
    fig.tight_layout()
    out = Path(png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
