"""Determinism, disjointness, label priors and report hygiene of the generator."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy.stats import chisquare

from radpair.core.task import load_task
from radpair.listener.reports import parse_report
from radpair.training.cohort import read_cohort
from tests.support.cohorts import make_cohort

TASK = load_task()
_LEAK = re.compile("|".join([*TASK.report.leak_terms, *(re.escape(name) for name in TASK.class_names)]), re.IGNORECASE)


def _uids(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        found |= {ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID}
        found |= {ds.FrameOfReferenceUID} if "FrameOfReferenceUID" in ds else set()
    return found


def _content(folder: Path) -> dict[str, bytes]:
    """Pixel data of every image, and every SR's text, by path relative to the cohort."""
    out = {}
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        out[str(path.relative_to(folder))] = ds.PixelData if "PixelData" in ds else str(ds.ContentSequence).encode()
    return out


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("twins")
    size = (20, 24, 24)
    return (make_cohort(root / "a", n=3, seed=5, size=size), make_cohort(root / "b", n=3, seed=5, size=size, workers=2),
            make_cohort(root / "c", n=3, seed=6, size=size))


def test_same_seed_is_byte_identical(twins: tuple[Path, Path, Path]) -> None:
    a, b, _ = twins
    assert _content(a) == _content(b)
    for name in ("labels.csv", "reports.jsonl", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    for path in a.rglob("*"):
        if path.is_file():  # SR dates, gzip headers: nothing read from the clock
            assert path.read_bytes() == (b / path.relative_to(a)).read_bytes(), path


def test_other_seed_or_shift_shares_no_uid(twins: tuple[Path, Path, Path], tmp_path: Path) -> None:
    a, _, c = twins
    shifted = make_cohort(tmp_path / "s", n=3, seed=5, shift="external", size=(20, 24, 24))
    assert _uids(a).isdisjoint(_uids(c))
    assert _uids(a).isdisjoint(_uids(shifted))
    assert {s.patient_id for s in read_cohort(a)}.isdisjoint(s.patient_id for s in read_cohort(c))


def test_reports_never_name_the_class(cohort: Path, shifted_cohort: Path) -> None:
    for folder in (cohort, shifted_cohort):
        for study in read_cohort(folder):
            assert not _LEAK.search(study.report_text), study.report_text
            sr = pydicom.dcmread(study.report_path)
            texts = [item.TextValue for section in sr.ContentSequence for item in section.ContentSequence]
            assert texts == list(study.report_sections.values())
            # What radpair's listener extracts from the SR is the cohort's text, to the character.
            assert parse_report(study.report_path.read_bytes()).text == study.report_text
            assert not any(_LEAK.search(text) for text in texts)


def test_reports_describe_the_lesion_or_its_absence(cohort: Path) -> None:
    """And the task's one parser reads the true location back from what the report says."""
    for study in read_cohort(cohort):
        text = study.report_text.lower()
        if study.has_lesion:
            site_words = [w for w in study.site.split() if w not in ("left", "right", "and")]
            assert all(word in text for word in site_words), (study.site, text)
            assert re.search(r"\d+ x \d+ x \d+ mm", text)
            assert TASK.location_of(study.report_text) == study.location, study.report_text
        else:
            assert re.search(r"no (focal|intracranial mass|mass)", text)
            assert TASK.location_of(text) is None


def test_report_style_shift_changes_the_vocabulary(cohort: Path, shifted_cohort: Path) -> None:
    standard = " ".join(s.report_text for s in read_cohort(cohort) if s.has_lesion)
    narrative = " ".join(s.report_text for s in read_cohort(shifted_cohort) if s.has_lesion)
    assert " mm" in standard and " cm" in narrative and "1. " in narrative and "1. " not in standard


def test_external_shift_changes_the_acquisition(cohort: Path, shifted_cohort: Path) -> None:
    plain = [pydicom.dcmread(p) for p in sorted(read_cohort(cohort)[0].series_dir.glob("*.dcm"))]
    shifted = [pydicom.dcmread(p) for p in sorted(read_cohort(shifted_cohort)[0].series_dir.glob("*.dcm"))]
    assert plain[1].ImagePositionPatient[2] > plain[0].ImagePositionPatient[2]
    assert shifted[1].ImagePositionPatient[2] < shifted[0].ImagePositionPatient[2]  # descending slice order
    assert shifted[0].ImageOrientationPatient[4] == -1.0 and plain[0].ImageOrientationPatient[4] == 1.0
    assert shifted[0].Manufacturer != plain[0].Manufacturer and int(shifted[0].StudyDate[:4]) >= 2018
    assert shifted[0].PixelSpacing[0] != plain[0].PixelSpacing[0]
    manifest = json.loads((shifted_cohort / "manifest.json").read_text())
    assert manifest["shift"]["name"] == "external+report-style" and manifest["shift"]["noise_sigma"] > 0.02


def test_label_statistics_match_the_priors(tmp_path: Path) -> None:
    """200 studies at 8x12x12 (labels do not depend on the size): joint location x class counts and
    lesion-free count against the configured priors (chi-square)."""
    n, free = 200, 0.1
    studies = read_cohort(make_cohort(tmp_path / "big", n=n, seed=2024, size=(8, 12, 12), workers=2,
                                      lesion_free_fraction=free))
    observed, expected = [], []
    location_total = sum(c.prior for c in TASK.cohort.locations)
    for where in TASK.cohort.locations:
        class_total = sum(c.prior[where.location] for c in TASK.cohort.classes)
        for look in TASK.cohort.classes:
            observed.append(sum(1 for s in studies if s.location == where.location and s.label == look.name))
            expected.append(n * (1 - free) * where.prior / location_total * look.prior[where.location] / class_total)
    observed.append(sum(1 for s in studies if not s.has_lesion))
    expected.append(n * free)
    assert sum(observed) == n
    assert chisquare(observed, expected).pvalue > 0.001, (observed, np.round(expected, 1))
    # Location matters for the class, as in the disease: fusion dominates infratentorially.
    infra = [s for s in studies if s.location == "infratentorial"]
    supra = [s for s in studies if s.location == "supratentorial"]
    assert np.mean([s.label == "BRAF-fusion" for s in infra]) > 0.6 > np.mean([s.label == "BRAF-fusion" for s in supra])


def test_external_is_the_sum_of_its_one_change_shifts() -> None:
    from dataclasses import replace

    from radpair.training.cohort.shifts import resolve_shift

    parts = resolve_shift("external-geometry,external-intensity,external-noise,external-tags")
    assert replace(parts, name="external") == resolve_shift("external")
    tags_only, plain = resolve_shift("external-tags"), resolve_shift("none")
    pixel_fields = ("intensity_scale", "gamma", "noise_sigma", "bias_strength", "fov_mm", "descending_slices", "flip_rows")
    assert all(getattr(tags_only, f) == getattr(plain, f) for f in pixel_fields)
    assert tags_only.manufacturer != plain.manufacturer
