"""The task definition: its one location parser, its report-text policy and its series rule (pure
data in, an answer or a reason out), and its validation."""

from __future__ import annotations

import dataclasses

import pytest

from radpair.core.inputs import NoSeries, SeriesInfo, orientation_of, select_series
from radpair.core.config import ConfigError
from radpair.core.task import InputDef, default_task_path, load_task

TASK = load_task()


@pytest.mark.parametrize(("text", "location"), [
    ("Cerebellar pilocytic astrocytoma.", "infratentorial"),
    ("Supratentorial and infratentorial extension (transtentorial).", "transtentorial"),
    ("A mass of the left mesial temporal lobe and cerebellum.", "transtentorial"),
    ("Lesion centred in the R thalamus, measuring 20 mm.", "supratentorial"),
    ("There is a well-defined mass within the pons. No hydrocephalus.", "infratentorial"),
    ("Left frontal mass. The fourth ventricle is patent. No cerebellar lesion.", "supratentorial"),
    ("No intracranial mass lesion. Normal MRI brain.", None),
    ("", None),
])
def test_one_parser_reads_locations_from_report_wording(text: str, location: str | None) -> None:
    assert TASK.location_of(text) == location


def test_report_policy_reads_the_latest_or_all_reports_and_chosen_sections() -> None:
    reports = [("Findings:\nold text", {"Findings": "old text"}),
               ("Findings:\nnew text\n\nImpressions:\ncerebellar mass", {"Findings": "new text", "Impressions": "cerebellar mass"})]
    assert TASK.report_text(reports) == reports[1][0]
    everything = dataclasses.replace(TASK, report=dataclasses.replace(TASK.report, policy="all"))
    assert everything.report_text(reports) == reports[0][0] + "\n\n" + reports[1][0]
    impressions = dataclasses.replace(TASK, report=dataclasses.replace(TASK.report, sections=("Impressions",)))
    assert impressions.report_text(reports) == "Impressions:\ncerebellar mass"
    assert impressions.report_text(reports[:1]) == reports[0][0]  # a report without the section is read whole


def series(pk: int, n: int = 40, modality: str = "MR", description: str = "T1 AX", orientation: str = "axial",
           image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY"), number: int = 1) -> SeriesInfo:
    return SeriesInfo(pk, f"1.{pk}", number, modality, "BRAIN", description, n, orientation, image_type)


def test_orientation_names_the_plane() -> None:
    assert orientation_of([1, 0, 0, 0, 1, 0]) == "axial"
    assert orientation_of([0, 1, 0, 0, 0, -1]) == "sagittal"
    assert orientation_of([1, 0, 0, 0, 0, -1]) == "coronal"
    assert orientation_of([1, 0, 0, 0, 0.7071, 0.7071]) == "oblique"
    assert orientation_of(None) == ""


def test_the_largest_series_that_fits_the_rule_is_selected() -> None:
    rule = InputDef(series_description="t1|flair", orientation="axial")
    chosen = select_series(rule, [
        series(1, n=30),
        series(2, n=60, orientation="sagittal"),                 # larger, but not axial
        series(3, n=50),
        series(4, n=90, description="DWI AX"),                    # larger, wrong description
        series(5, n=99, image_type=("DERIVED", "LOCALIZER")),     # a localiser is never analysed
        series(6, n=1, modality="SR", orientation=""),
    ])
    assert isinstance(chosen, SeriesInfo) and chosen.pk == 3


def test_ties_take_the_lowest_series_number() -> None:
    chosen = select_series(InputDef(), [series(1, number=7), series(2, number=3)])
    assert isinstance(chosen, SeriesInfo) and chosen.series_number == 3


def test_no_series_says_why() -> None:
    outcome = select_series(InputDef(min_instances=20), [series(1, n=5, image_type=("LOCALIZER",))])
    assert isinstance(outcome, NoSeries)
    assert "5 instances < 20" in outcome.reason and "image type LOCALIZER" in outcome.reason
    assert select_series(InputDef(), []) == NoSeries("study has no series")


def test_a_task_is_checked_when_it_is_read(tmp_path) -> None:
    text = default_task_path().read_text()
    second = text.index('[[classes]]\nname = "BRAF-V600E"')
    path = tmp_path / "task.toml"
    path.write_text(text[:second] + text[text.index("\n\n", second):])
    with pytest.raises(ConfigError, match="at least two classes"):
        load_task(path)
    path.write_text(text.replace('spans = ["supratentorial", "infratentorial"]', 'spans = ["cerebrum"]'))
    with pytest.raises(ConfigError, match="spans unknown locations"):
        load_task(path)
