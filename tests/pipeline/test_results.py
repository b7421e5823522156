"""SR, SEG and Parametric Map built from a real (synthetic) MR series: dciodvfy-clean, highdicom round-trip."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from radpair.core.task import load_task
from radpair.pipeline import codes
from radpair.pipeline.results import Finding, Provenance
from radpair.pipeline.results.pmap import build_parametric_map
from radpair.pipeline.results.sc import BANNER, build_key_image
from radpair.pipeline.results.seg import build_seg
from radpair.pipeline.results.sr import build_sr
from tests.support.checks import dciodvfy_errors, text_items
from tests.support.dicom import read_series, write_head_series

TASK = load_task()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("results")
    source = read_series(write_head_series(tmp / "mr"))
    n, rows, cols = len(source), source[0].Rows, source[0].Columns
    heat = np.zeros((n, rows, cols), np.float32)
    heat[4:8, 10:20, 8:16] = np.linspace(0.2, 1.0, 4 * 10 * 8).reshape(4, 10, 8)
    prov = Provenance("radpair", "radpair_classifier", "7")
    seg = build_seg(source, heat >= 0.5, TASK, prov, generate_uid(), generate_uid(), 9001)
    pm = build_parametric_map(source, heat, TASK, prov, generate_uid(), generate_uid(), 9002)
    sr = build_sr(source, seg, TASK, Finding(True, 0.97, "BRAF-V600E", 0.8125), "infratentorial", prov,
                  generate_uid(), generate_uid(), 9003, generate_uid(), mask=heat >= 0.5)
    no_lesion = build_sr(source, None, TASK, Finding(False, 0.03), None, prov, generate_uid(), generate_uid(), 9003,
                         generate_uid(), library=source[:1])
    paths = {}
    for name, ds in (("seg", seg), ("pm", pm), ("sr", sr), ("sr_no_lesion", no_lesion)):
        paths[name] = tmp / f"{name}.dcm"
        ds.save_as(paths[name], enforce_file_format=True)
    return {"source": source, "heat": heat, "paths": paths}


def test_sr_outlines_the_region_on_its_largest_slice_with_class_and_probabilities(written: dict) -> None:
    """The planar group a viewer draws: the bounding box of the SEG's region on the slice where it
    is largest, on that very image, the same finding (tracking identifier) as the volumetric group."""
    sr = hd.sr.srread(written["paths"]["sr"])
    (group,) = sr.content.get_planar_roi_measurement_groups()
    mask = written["heat"] >= 0.5
    largest = int(np.argmax(mask.sum(axis=(1, 2))))
    region = group.roi
    assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    rows, cols = np.nonzero(mask[largest])
    corners = {(float(x), float(y)) for x, y in region.value}
    assert corners == {(cols.min(), rows.min()), (cols.max() + 1, rows.min()), (cols.max() + 1, rows.max() + 1),
                       (cols.min(), rows.max() + 1)}
    (image,) = region.ContentSequence  # SELECTED FROM the source image
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == written["source"][largest].SOPInstanceUID
    (evaluation,) = group.get_qualitative_evaluations(name=TASK.finding.class_concept.code())
    assert evaluation.value == TASK.class_code("BRAF-V600E").code()
    (named,) = group.get_measurements(name=codes.probability_of_class(TASK, "BRAF-V600E"))
    assert named.value == pytest.approx(0.8125) and named.name.meaning == f"Probability of {evaluation.value.meaning}"
    (volume,) = sr.content.get_volumetric_roi_measurement_groups()
    assert group.tracking_uid == volume.tracking_uid and group.tracking_identifier == "radpair: BRAF-V600E (p=0.81)"
    assert not hd.sr.srread(written["paths"]["sr_no_lesion"]).content.get_planar_roi_measurement_groups()


@pytest.mark.parametrize("kind", ["seg", "pm", "sr", "sr_no_lesion"])
def test_dciodvfy_reports_no_errors(written: dict, kind: str) -> None:
    assert dciodvfy_errors(written["paths"][kind]) == []


@pytest.mark.parametrize("kind", ["seg", "pm", "sr"])
def test_same_study_and_patient_new_series(written: dict, kind: str) -> None:
    ds = pydicom.dcmread(written["paths"][kind])
    src = written["source"][0]
    for attr in ("StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                 "AccessionNumber", "StudyID", "StudyDate"):
        assert ds[attr].value == src[attr].value, attr
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID
    assert "radpair" in ds.SeriesDescription


def test_seg_round_trips_and_covers_every_source_frame(written: dict) -> None:
    seg = hd.seg.segread(written["paths"]["seg"])
    source = written["source"]
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert int(seg.NumberOfFrames) == len(source)
    sop_uids = [ds.SOPInstanceUID for ds in source]
    pixels = seg.get_pixels_by_source_instance(sop_uids, segment_numbers=[1])[..., 0]
    expected = written["heat"] >= 0.5
    assert pixels.shape == expected.shape
    assert np.array_equal(pixels.astype(bool), expected)
    assert seg.get_segment_description(1).segment_label == "Model attention region"


def test_parametric_map_keeps_the_heatmap(written: dict) -> None:
    pm = pydicom.dcmread(written["paths"]["pm"])
    assert pm.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"
    frames = pm.pixel_array
    by_uid = {ds.SOPInstanceUID: i for i, ds in enumerate(written["source"])}
    order = [by_uid[f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
             for f in pm.PerFrameFunctionalGroupsSequence]
    np.testing.assert_allclose(frames, written["heat"][order], atol=1e-6)


def test_sr_carries_class_probability_version_site_and_references(written: dict) -> None:
    sr = hd.sr.srread(written["paths"]["sr"])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations(name=TASK.finding.class_concept.code())
    assert evaluation.value == TASK.class_code("BRAF-V600E").code()
    (measurement,) = group.get_measurements(name=codes.CLASS_PROBABILITY)
    assert measurement.value == pytest.approx(0.8125)
    texts = dict(text_items(group[0]))
    assert texts[("DCM", "111001")] == "radpair" and texts[("DCM", "111003")] == "7"  # algorithm name, version
    (site,) = group.finding_sites
    assert site.value == pydicom.sr.codedict.codes.SCT.Brain
    assert site.topographical_modifier == TASK.location_code("infratentorial").code()
    seg = pydicom.dcmread(written["paths"]["seg"], stop_before_pixels=True)
    assert group.reference_type == pydicom.sr.codedict.codes.DCM.ReferencedSegment
    referenced = {item.ReferencedSOPInstanceUID
                  for study in sr.CurrentRequestedProcedureEvidenceSequence
                  for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in referenced
    assert {ds.SOPInstanceUID for ds in written["source"]} <= referenced


@pytest.mark.parametrize("kind", ["seg", "pm", "sr"])
def test_every_object_names_the_same_equipment_and_declares_the_private_scheme(written: dict, kind: str) -> None:
    ds = pydicom.dcmread(written["paths"][kind], stop_before_pixels=True)
    assert (ds.Manufacturer, ds.ManufacturerModelName, ds.DeviceSerialNumber) == ("radpair", "radpair_classifier v7", "radpair")
    assert ds.SoftwareVersions
    assert codes.SCHEME in {item.CodingSchemeDesignator for item in ds.CodingSchemeIdentificationSequence}


def test_key_image_is_labelled_not_for_diagnosis(tmp_path: Path, written: dict) -> None:
    sc = build_key_image(written["source"], written["heat"], "BRAF-fusion", 0.77, Provenance("radpair", "m", "2"),
                         generate_uid(), generate_uid(), 9904)
    path = tmp_path / "sc.dcm"
    sc.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.BurnedInAnnotation == "YES" and "NOT FOR DIAGNOSIS" in ds.SeriesDescription and "NOT FOR DIAGNOSIS" in BANNER
    assert ds.StudyInstanceUID == written["source"][0].StudyInstanceUID
    assert ds.pixel_array.shape[-1] == 3 and ds.pixel_array[..., 0].std() > 0
