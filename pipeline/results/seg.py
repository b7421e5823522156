"""The binary DICOM SEG of the region the model attended to (what OHIF and Slicer overlay)."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from radpair.core.task import TaskDefinition
from radpair.pipeline import codes as rp_codes
from radpair.pipeline.results import Provenance

SEGMENT_LABEL = "Model attention region"


def build_seg(
    source: Sequence[Dataset], mask: np.ndarray, task: TaskDefinition, provenance: Provenance,
    series_uid: str, sop_uid: str, series_number: int,
) -> hd.seg.Segmentation:
    """``mask`` is boolean ``[len(source), rows, cols]``, frame i over ``source[i]``.

    Every source frame gets a SEG frame (``omit_empty_frames=False``) so viewers that pair SEG
    frames with image slices by index stay aligned.
    """
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=rp_codes.ATTENTION_REGION,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=provenance.seg_algorithm(),
        anatomic_regions=[task.finding.site.code()],
    )
    return hd.seg.Segmentation(
        source_images=list(source),
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        **provenance.equipment(),
        omit_empty_frames=False,
        coding_schemes=rp_codes.coding_schemes(task),
        series_description=f"radpair attention SEG ({provenance.model_label})",
        content_label="ATTENTION",
        content_description="Region the model attended to (research use)",
    )
