"""Optional Secondary Capture key image for viewers that show neither SEG, SR nor parametric maps.

The slice with the most attention, with the attention burned in as a colour overlay and a banner
"NOT FOR DIAGNOSIS"; the object says BurnedInAnnotation YES. Rendered with matplotlib (Agg).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - backend first
import numpy as np  # noqa: E402
from pydicom import Dataset  # noqa: E402

from radpair.pipeline.results import Provenance  # noqa: E402

BANNER = "NOT FOR DIAGNOSIS - research use only"


def render_key_image(image: np.ndarray, attention: np.ndarray, caption: str) -> np.ndarray:
    """RGB uint8 picture of one slice with its attention overlaid and the banner burned in."""
    fig = plt.figure(figsize=(5.12, 5.12), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image, cmap="gray")
    ax.imshow(np.ma.masked_less(attention, 0.05), cmap="inferno", alpha=0.45, vmin=0, vmax=1)
    ax.text(0.5, 0.98, BANNER, color="yellow", ha="center", va="top", fontsize=12, weight="bold",
            transform=ax.transAxes, bbox={"facecolor": "black", "alpha": 0.7})
    ax.text(0.02, 0.02, caption, color="white", ha="left", va="bottom", fontsize=10, transform=ax.transAxes,
            bbox={"facecolor": "black", "alpha": 0.6})
    ax.set_axis_off()
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return rgb


def build_key_image(
    source: Sequence[Dataset], attention: np.ndarray, predicted_class: str, probability: float,
    provenance: Provenance, series_uid: str, sop_uid: str, series_number: int,
) -> hd.sc.SCImage:
    """``attention`` is ``[len(source), rows, cols]``, frame i over ``source[i]``."""
    k = int(attention.reshape(len(source), -1).sum(axis=1).argmax())
    caption = f"{provenance.algorithm_name} {provenance.model_label}: {predicted_class} p={probability:.2f}"
    rgb = render_key_image(source[k].pixel_array, attention[k], caption)
    image = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source[k],
        pixel_array=rgb,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        **provenance.equipment(),
        patient_orientation=("L", "P"),
        series_description=f"radpair key image NOT FOR DIAGNOSIS ({provenance.model_label})",
    )
    # The banner and the overlay are in the pixels: say so (highdicom has no argument for it).
    image.BurnedInAnnotation = "YES"
    # Type 2C in General Series, required by dciodvfy without Image Laterality; empty: unknown.
    image.Laterality = None
    return image
