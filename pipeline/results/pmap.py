"""The continuous attention heatmap as a DICOM Parametric Map (OHIF >= 3.9 and Slicer show it)."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from radpair.core.task import TaskDefinition
from radpair.pipeline import codes as rp_codes
from radpair.pipeline.results import Provenance


def build_parametric_map(
    source: Sequence[Dataset], heatmap: np.ndarray, task: TaskDefinition, provenance: Provenance,
    series_uid: str, sop_uid: str, series_number: int,
) -> hd.pm.ParametricMap:
    """``heatmap`` is float ``[len(source), rows, cols]`` in [0, 1], frame i over ``source[i]``."""
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ATTENTION",
        lut_explanation="Model attention (0 = ignored, 1 = most attended)",
        unit=codes.UCUM.NoUnits,
        value_range=(0.0, 1.0),
        slope=1.0,
        intercept=0.0,
        quantity_definition=rp_codes.ATTENTION_MAP,
    )
    pmap = hd.pm.ParametricMap(
        source_images=list(source),
        pixel_array=np.clip(heatmap, 0.0, 1.0).astype(np.float32),
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        **provenance.equipment(),
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label="ATTENTION",
        content_description="Model attention heatmap (research use)",
        coding_schemes=rp_codes.coding_schemes(task),
        series_description=f"radpair attention map ({provenance.model_label})",
    )
    # Type 2C in General Series that highdicom leaves out for parametric maps; dciodvfy requires
    # it whenever no Image/Frame Laterality is present. Empty: laterality unknown.
    pmap.Laterality = None
    return pmap
