"""The TID 1500 measurement report (Comprehensive 3D SR) a radiologist reads in the viewer.

One measurement group says whether the task's finding is present (SCT Present / Absent) with the
model's probability of it, the finding site (the task's, with the location the study's report
names, when it names one) and the algorithm identification (name, version = model version,
parameters = the model card's validation figures and operating points). When a lesion was found
the group is a TID 1411 volumetric ROI group about the SEG's region and also carries the predicted
class (qualitative evaluation) and its probability; when none was found it is a TID 1501 group
with no region and no class. Every code comes from the task (:mod:`radpair.core.task`) or from
radpair's own (:mod:`radpair.pipeline.codes`). The evidence references the source series (and the SEG).

A found lesion also gets a TID 1410 planar ROI group about the same finding (same tracking
identifier): the region's outline (its bounding box) on the slice where the region is largest,
with the class and "Probability of <class>" (RP2nn). OHIF 3 draws a finding only from an image
region (SCOORD), merges the groups of one tracking identifier and labels the drawing with their
numbers' names and values only; docs/viewer.md shows what a radiologist sees.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sr.codedict import codes

from radpair.core.task import TaskDefinition
from radpair.pipeline import codes as rp_codes
from radpair.pipeline.results import Finding, Provenance

TITLE = "radpair AI result - research use, not for diagnosis"


def build_sr(
    source: Sequence[Dataset],
    seg: hd.seg.Segmentation | None,
    task: TaskDefinition,
    finding: Finding,
    location: str | None,
    provenance: Provenance,
    series_uid: str,
    sop_uid: str,
    series_number: int,
    tracking_uid: str,
    library: Sequence[Dataset] | None = None,
    previous_versions: Sequence[Dataset] = (),
    mask: np.ndarray | None = None,
) -> hd.sr.Comprehensive3DSR:
    """``seg``: the SEG of the finding's region (None when no lesion was found); ``library``: the
    images listed in the image library (default all of ``source``; radpair lists the most attended
    slices of the SEG region, since each entry costs); ``location``: the task's location the
    study's report names; ``previous_versions``: this study's earlier radpair SRs, which this one
    supersedes; ``mask``: the SEG's region, frames aligned with ``source``, whose largest slice
    gets the planar ROI group. The evidence always lists every source image."""
    algorithm = provenance.sr_algorithm()
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=tracking_uid.rsplit(".", 1)[0] + ".1", name=provenance.algorithm_name,
            manufacturer_name=provenance.manufacturer, model_name=provenance.model_label,
        ),
    )
    measurements = [hd.sr.Measurement(name=rp_codes.LESION_PROBABILITY, value=round(finding.lesion_probability, 6),
                                      unit=codes.UCUM.NoUnits, algorithm_id=algorithm)]
    evaluations = [hd.sr.QualitativeEvaluation(name=task.finding.code.code(),
                                               value=codes.SCT.Present if finding.present else codes.SCT.Absent)]
    if finding.present and finding.predicted_class is not None:
        measurements.append(hd.sr.Measurement(name=rp_codes.CLASS_PROBABILITY,
                                              value=round(float(finding.class_probability or 0.0), 6),
                                              unit=codes.UCUM.NoUnits, algorithm_id=algorithm))
        evaluations.append(hd.sr.QualitativeEvaluation(name=task.finding.class_concept.code(),
                                                       value=task.class_code(finding.predicted_class).code()))
    common = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier=_tracking_label(finding, seg is not None)),
        finding_type=task.finding.code.code(),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=task.finding.site.code(),
                                         topographical_modifier=task.location_code(location).code() if location else None)],
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )
    if seg is None:
        group = hd.sr.MeasurementsAndQualitativeEvaluations(**common)
    else:
        group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            # Built by hand from the SEG's UIDs: ReferencedSegment.from_segmentation cannot read a
            # single-segment SEG, whose segment identification sits in the shared functional groups.
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=1,
                source_series=hd.sr.SourceSeriesForSegmentation(source[0].SeriesInstanceUID),
            ),
            **common,
        )
    groups: list[hd.sr.MeasurementsAndQualitativeEvaluations | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
                 | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations] = [group]
    if seg is not None and mask is not None and mask.any():
        # The same finding (same tracking identifier) on its key slice. Viewers that track findings
        # (OHIF) merge it with the group above and label the drawing with the groups' numbers' names,
        # so this one states the class's probability under the class's name.
        named = [hd.sr.Measurement(name=rp_codes.probability_of_class(task, finding.predicted_class),
                                   value=round(float(finding.class_probability or 0.0), 6), unit=codes.UCUM.NoUnits,
                                   algorithm_id=algorithm)] if finding.predicted_class is not None else []
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            referenced_region=_key_slice_region(source, mask), **{**common, "measurements": named}))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=task.sr.procedure.code(),
        imaging_measurements=groups,
        referenced_images=list(source if library is None else library) or None,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*source, *([seg] if seg is not None else [])],
        content=report,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        **provenance.equipment(),
        is_complete=True,
        previous_versions=list(previous_versions) or None,
        coding_schemes=rp_codes.coding_schemes(task),
        series_description=f"radpair AI report ({provenance.model_label})",
    )


def _tracking_label(finding: Finding, has_region: bool) -> str:
    """The finding's human-readable tracking identifier, which viewers list: the class when there is one."""
    if finding.present and finding.predicted_class is not None:
        return f"radpair: {finding.predicted_class} (p={float(finding.class_probability or 0.0):.2f})"
    return "radpair attention region" if has_region else "radpair finding"


def _key_slice_region(source: Sequence[Dataset], mask: np.ndarray) -> hd.sr.ImageRegion:
    """The bounding box of ``mask`` on its largest slice, a closed polyline in that image's pixel
    coordinates (0,0 is the top left corner of the top left pixel, so the box encloses whole pixels)."""
    index = int(np.argmax(mask.reshape(len(mask), -1).sum(axis=1)))
    rows, cols = np.nonzero(mask[index])
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    outline = np.array([[left, top], [right, top], [right, bottom], [left, bottom], [left, top]], dtype=float)
    return hd.sr.ImageRegion(graphic_type=hd.sr.GraphicTypeValues.POLYLINE, graphic_data=outline,
                             source_image=hd.sr.SourceImageForRegion.from_source_image(source[index]))
