"""The cohort's files are real, valid DICOM whose geometry MONAI reads like the masks say."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from monai.data import PydicomReader
from monai.transforms import LoadImage

from radpair.core.task import load_task
from radpair.training.cohort import read_cohort


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]


@pytest.mark.parametrize("which", ["cohort", "shifted_cohort"])
def test_every_file_reads_and_series_are_consistent(which: str, request: pytest.FixtureRequest) -> None:
    studies = read_cohort(request.getfixturevalue(which))
    uids: set[str] = set()
    for study in studies:
        slices = [pydicom.dcmread(p) for p in sorted(study.series_dir.glob("*.dcm"))]
        sr = pydicom.dcmread(study.report_path)
        assert {ds.StudyInstanceUID for ds in slices} == {sr.StudyInstanceUID} == {study.study_uid}
        assert {ds.AccessionNumber for ds in slices} == {sr.AccessionNumber} == {study.accession_number}
        assert {ds.PatientID for ds in slices} == {sr.PatientID} == {study.patient_id}
        assert len({ds.SeriesInstanceUID for ds in slices}) == 1 and sr.SeriesInstanceUID != slices[0].SeriesInstanceUID
        assert len({ds.FrameOfReferenceUID for ds in slices}) == 1
        assert [ds.InstanceNumber for ds in slices] == list(range(1, len(slices) + 1))
        for ds in slices:
            assert ds.pixel_array.shape == (ds.Rows, ds.Columns)
        # Positions step by SpacingBetweenSlices along the slice normal.
        positions = np.array([ds.ImagePositionPatient for ds in slices], dtype=float)
        steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        assert np.allclose(steps, float(slices[0].SpacingBetweenSlices), atol=1e-3)
        uids |= {ds.SOPInstanceUID for ds in slices} | {sr.SOPInstanceUID}
    assert len(uids) == sum(len(list(s.series_dir.glob("*.dcm"))) + 1 for s in studies)


@pytest.mark.parametrize("which", ["cohort", "shifted_cohort"])
def test_dciodvfy_finds_no_errors(which: str, request: pytest.FixtureRequest) -> None:
    studies = read_cohort(request.getfixturevalue(which))
    lesion, normal = next(s for s in studies if s.has_lesion), next((s for s in studies if not s.has_lesion), studies[-1])
    for study in (lesion, normal):
        slices = sorted(study.series_dir.glob("*.dcm"))
        for path in (slices[0], slices[len(slices) // 2], study.report_path):
            assert _dciodvfy_errors(path) == [], path


@pytest.mark.parametrize("which", ["cohort", "shifted_cohort"])
def test_monai_series_matches_mask_and_lesion_is_where_the_mask_is(which: str, request: pytest.FixtureRequest) -> None:
    for study in read_cohort(request.getfixturevalue(which)):
        image = LoadImage(image_only=True, reader=PydicomReader())(str(study.series_dir))
        mask = LoadImage(image_only=True)(str(study.mask_path))
        assert tuple(image.shape) == tuple(mask.shape)
        assert np.allclose(image.affine.numpy(), mask.affine.numpy(), atol=1e-3)
        inside = mask.numpy() > 0
        assert inside.any() == study.has_lesion
        if study.has_lesion:
            voxel = abs(np.linalg.det(mask.affine.numpy()[:3, :3]))
            assert inside.sum() * voxel == pytest.approx(study.lesion_volume_mm3, rel=1e-3)
            # FLAIR lesion: its brightest part stands out of the brain around it.
            assert np.percentile(image.numpy()[inside], 90) > 1.3 * np.median(image.numpy()[image.numpy() > 0.2 * image.max()])


def test_report_measurements_agree_with_the_mask(cohort: Path) -> None:
    checked = 0
    for study in read_cohort(cohort):
        match = re.search(r"(\d+) x (\d+) x (\d+) mm", study.report_text)
        if not match:
            continue
        mask = LoadImage(image_only=True)(str(study.mask_path))
        points = np.argwhere(mask.numpy() > 0)
        world = points @ mask.affine.numpy()[:3, :3].T
        extents = world.max(axis=0) - world.min(axis=0)  # RAS: x transverse, y AP, z CC
        step = np.abs(mask.affine.numpy()[:3, :3]).sum(axis=0).min()
        ap, tr, cc = (float(v) for v in match.groups())
        assert ap == pytest.approx(extents[1] + step, abs=1.0)
        assert tr == pytest.approx(extents[0] + step, abs=1.0)
        assert cc == pytest.approx(extents[2] + step, abs=1.0)
        checked += 1
    assert checked >= 1


def test_labels_are_the_contract(cohort: Path) -> None:
    for study in read_cohort(cohort):
        if study.has_lesion:
            assert study.label_index == load_task().class_index(study.label) >= 0
            assert study.location in ("supratentorial", "infratentorial", "transtentorial") and study.site
        else:
            # The task's absent label: a known "no lesion", which trains the lesion head.
            assert (study.label, study.label_index, study.location, study.site) == (load_task().finding.absent_label, -1, "none", "")
        assert set(study.report_sections) == {"Findings", "Impression"}
