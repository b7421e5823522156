"""Routing rules and series selection: pure data in, a route or a reason out."""

from __future__ import annotations

from core.settings import RoutingRuleSettings
from pipeline.rules import NoMatch, Route, SeriesInfo, orientation_of, route

MR = "1.2.840.10008.5.1.4.1.1.4"
SR = "1.2.840.10008.5.1.4.1.1.88.22"


def series(uid: str, n: int = 40, modality: str = "MR", description: str = "T1 AX", orientation: str = "axial",
           body_part: str = "BRAIN", sop: str = MR, ae: str = "PACS", number: int = 1) -> SeriesInfo:
    return SeriesInfo(uid, number, modality, body_part, description, "MR HEAD", frozenset({sop}),
                      frozenset({ae}), n, orientation)


def test_orientation_names_the_plane() -> None:
    assert orientation_of([1, 0, 0, 0, 1, 0]) == "axial"
    assert orientation_of([0, 1, 0, 0, 0, -1]) == "sagittal"
    assert orientation_of([1, 0, 0, 0, 0, -1]) == "coronal"
    assert orientation_of([1, 0, 0, 0, 0.7071, 0.7071]) == "oblique"
    assert orientation_of(None) == ""


def test_largest_matching_series_is_selected() -> None:
    rule = RoutingRuleSettings(name="brain", body_part="brain|head", series_description="t1", orientation="axial")
    chosen = route([rule], [
        series("1.1", n=30),
        series("1.2", n=60, orientation="sagittal"),        # larger, but not axial
        series("1.3", n=50),
        series("1.4", n=90, description="FLAIR AX"),         # larger, wrong description
        series("1.5", n=1, modality="SR", sop=SR, orientation=""),
    ])
    assert isinstance(chosen, Route)
    assert chosen.series.series_uid == "1.3"
    assert chosen.rule.name == "brain"


def test_first_matching_rule_wins_and_ties_take_lowest_series_number() -> None:
    ct_rule = RoutingRuleSettings(name="ct", modality="CT", model="ct_model")
    mr_rule = RoutingRuleSettings(name="mr", model="mr_model")
    chosen = route([ct_rule, mr_rule], [series("1.7", n=40, number=7), series("1.3", n=40, number=3)])
    assert isinstance(chosen, Route)
    assert (chosen.rule.model, chosen.series.series_uid) == ("mr_model", "1.3")


def test_calling_ae_and_sop_class_criteria() -> None:
    rule = RoutingRuleSettings(name="from-pacs", calling_ae="^ORTHANC$", sop_class_uid=MR)
    assert isinstance(route([rule], [series("1.1", ae="ORTHANC")]), Route)
    assert isinstance(route([rule], [series("1.1", ae="MODALITY9")]), NoMatch)


def test_no_match_says_why() -> None:
    rule = RoutingRuleSettings(name="brain", body_part="brain", min_instances=20)
    outcome = route([rule], [series("1.1", n=5, body_part="KNEE")])
    assert isinstance(outcome, NoMatch)
    assert "rule 'brain'" in outcome.reason
    assert "KNEE" in outcome.reason and "5 instances < 20" in outcome.reason
    assert route([], [series("1.1")]) == NoMatch("no routing rules configured")
    assert route([rule], []) == NoMatch("study has no series")
