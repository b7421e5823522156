"""The radiologist's view, in a real viewer: Orthanc holds a study that radpair analysed and
delivered (the whole system: Orthanc auto-routes it to `radpair serve`, real Triton, results sent
back); OHIF 3 (npm @ohif/app) reads it over Orthanc's DICOMweb in headless Debian chromium.

The SEG's overlay must lie where the SEG's own mask lies on the displayed slice, and nowhere else
(the geometry survives the trip); the AI report (SR) must show its region with the class and
probabilities as text. Screenshots go to VIEWER_SHOTS (default: the test's tmp folder);
docs/viewer-seg.png and docs/viewer-sr.png were made by this test.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from collections.abc import Iterator
from types import SimpleNamespace

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from radpair.core.task import load_task
from radpair.pipeline import codes
from tests.support.checks import wait_for
from tests.support.dcmtk import storescu
from tests.support.e2e import results_in_pacs, running_system
from tests.support.ohif import ViewerServer, ohif_dist

pytestmark = pytest.mark.slow

TASK = load_task()
CHROMIUM = "/usr/bin/chromium"
SLICE = re.compile(r"I:\s*(\d+)\s*\((\d+)/(\d+)\)")


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    tmp = tmp_path_factory.mktemp("viewer")
    with running_system(tmp, dicomweb=True) as system:
        study = system.cohort[0]
        mr_files = sorted(study.series_dir.glob("*.dcm"))
        storescu(mr_files + [study.report_path], system.pacs.dicom_port, "PACS")
        found = wait_for("SR, SEG and PM in Orthanc", lambda: (r := results_in_pacs(system.pacs, study.study_uid))
                         and len(r) == 3 and r, timeout=300)
        paths = {kind: system.pacs.download(i["id"], tmp / f"{kind}.dcm") for kind, i in found.items()}
        with ViewerServer(ohif_dist(), system.pacs.dicomweb_url) as viewer:
            shots = Path(os.environ.get("VIEWER_SHOTS", tmp / "shots"))
            shots.mkdir(parents=True, exist_ok=True)
            yield SimpleNamespace(viewer=viewer, study=study, paths=paths, shots=shots, tmp=tmp,
                                  mr={pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber:
                                      pydicom.dcmread(p, stop_before_pixels=True) for p in mr_files})


@pytest.fixture()
def page(delivered: SimpleNamespace) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-background-networking",
            "--no-first-run"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{delivered.viewer.url}/viewer?StudyInstanceUIDs={delivered.study.study_uid}")
        page.get_by_text("Skip all").click(timeout=120_000)  # the viewer's first-visit tour
        page.get_by_text("Confirm and hide").click()
        yield page
        browser.close()


def _open(page, series_description: str) -> None:
    page.get_by_text(series_description).dblclick()


def _nudge(page) -> None:
    """Scroll the viewport one slice away and back, as a person would when nothing shows: with
    Debian's Chromium 156.0.8078.114, OHIF 3.13.2 draws an opened SR's annotations only on a later
    render (on .73 it drew them at once); the slice shown does not change."""
    page.locator("canvas").first.click()
    for key in ("ArrowDown", "ArrowUp"):
        page.keyboard.press(key)
        time.sleep(1)


def _open_until(page, series_description: str, shown: str, timeout: float = 150, again: float = 30,
                nudge: float = 10) -> str:
    """Open a series and wait for ``shown`` on the page; the page's text once it is there. A double
    click that lands while the viewer is still loading the study is lost, so it is repeated; a
    viewport that has not drawn what it opened after ``nudge`` seconds is scrolled away and back."""
    opened = [time.monotonic(), False]
    _open(page, series_description)

    def check() -> str | None:
        text = page.inner_text("body")
        if shown in text:
            return text
        waited = time.monotonic() - opened[0]
        if waited > again:
            _open(page, series_description)
            opened[:] = [time.monotonic(), False]
        elif waited > nudge and not opened[1]:
            _nudge(page)
            opened[1] = True
        return None

    return wait_for(f"{shown!r} on the page", check, timeout=timeout)


def _displayed(page, delivered: SimpleNamespace) -> pydicom.Dataset:
    """The MR image the viewport shows, from its overlay's instance number."""
    text = wait_for("the viewport's slice overlay", lambda: SLICE.search(page.inner_text("body")), timeout=60)
    return delivered.mr[int(text.group(1))]


def _image_pixels(page, image: pydicom.Dataset, path: Path) -> np.ndarray:
    """The viewport canvas as an RGB array cropped to the displayed image, which the viewer fits to
    the canvas and centres (the MR's pixels are square)."""
    page.locator("canvas").first.screenshot(path=path)
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
    height, width = rgb.shape[:2]
    scale = min(width / image.Columns, height / image.Rows)
    w, h = round(image.Columns * scale), round(image.Rows * scale)
    left, top = (width - w) // 2, (height - h) // 2
    return rgb[top:top + h, left:left + w]


def _project(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An image-pixel mask onto a screen region of ``shape`` (nearest pixel)."""
    rows = np.minimum((np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int), mask.shape[0] - 1)
    cols = np.minimum((np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int), mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


def _dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def test_seg_overlay_lies_where_the_seg_mask_lies(page, delivered: SimpleNamespace) -> None:
    _open(page, "radpair attention SEG")
    page.get_by_role("button", name="Yes").click(timeout=60_000)  # "Do you want to open this Segmentation?"
    page.wait_for_timeout(5000)
    image = _displayed(page, delivered)
    seg = hd.seg.segread(delivered.paths["SEG"])
    mask = seg.get_pixels_by_source_instance([image.SOPInstanceUID], segment_numbers=[1], combine_segments=True,
                                             skip_overlap_checks=True)[0] > 0
    assert mask.any(), "the viewer opens the SEG on a slice its region covers"
    page.screenshot(path=delivered.shots / "viewer-seg.png")
    pixels = _image_pixels(page, image, delivered.tmp / "seg-canvas.png")
    # The MR is grey (r = g = b); the segment is drawn in its recommended colour (red).
    overlay = (pixels[..., 0] - np.maximum(pixels[..., 1], pixels[..., 2])) > 40
    scale = pixels.shape[0] / image.Rows
    projected = _project(mask, overlay.shape)
    near = _dilate(projected, max(2, round(scale)))  # one image pixel of tolerance
    inside = (overlay & near).sum() / max(overlay.sum(), 1)
    covered = (overlay & projected).sum() / projected.sum()
    print(f"overlay pixels {overlay.sum()}, inside the mask (dilated 1 px) {inside:.3f}, mask covered {covered:.3f}")
    assert overlay.sum() > 0.5 * projected.sum(), "the overlay is drawn"
    # Measured 1.000 and 0.991; the same screenshot against the mask moved by one image pixel gives
    # 0.997 / 0.891, flipped top to bottom 1.000 / 0.939: both fail here.
    assert inside >= 0.98, "overlay-coloured pixels lie only where the SEG's mask lies"
    assert covered >= 0.95, "the SEG's region on this slice is covered by the overlay"


def test_ai_report_shows_region_class_and_probabilities(page, delivered: SimpleNamespace) -> None:
    sr = hd.sr.srread(delivered.paths["SR"])
    (volume,) = sr.content.get_volumetric_roi_measurement_groups()
    (cls,) = volume.get_qualitative_evaluations(name=TASK.finding.class_concept.code())
    (probability,) = volume.get_measurements(name=codes.CLASS_PROBABILITY)
    (presence,) = volume.get_measurements(name=codes.LESION_PROBABILITY)
    expected = [f"Probability of {cls.value.meaning}: {probability.value:.2f}",
                f"Probability of finding presence: {presence.value:.2f}"]
    text = _open_until(page, "radpair AI report", "Probability of finding presence")
    shown = [line for line in text.splitlines() if "Probability of" in line]
    assert all(any(e in line for line in shown) for e in expected), (expected, shown)
    assert "PMAP" in text and "radpair attention map" in text, "the parametric map is listed with the study"
    image = _displayed(page, delivered)
    (region,) = sr.content.get_planar_roi_measurement_groups()
    (selected,) = region.roi.ContentSequence
    assert image.SOPInstanceUID == selected.ReferencedSOPSequence[0].ReferencedSOPInstanceUID, \
        "the viewer shows the report on its key slice"
    page.screenshot(path=delivered.shots / "viewer-sr.png")
    pixels = _image_pixels(page, image, delivered.tmp / "sr-canvas.png")
    # The region is drawn as a green outline: every side of the SR's box has green pixels on it.
    green = (pixels[..., 1] - np.maximum(pixels[..., 0], pixels[..., 2])) > 80
    scale = pixels.shape[0] / image.Rows
    (left, top), (right, bottom) = region.roi.value.min(axis=0) * scale, region.roi.value.max(axis=0) * scale
    outline = np.zeros_like(green)
    r0, r1, c0, c1 = (min(round(v), n - 1) for v, n in ((top, green.shape[0]), (bottom, green.shape[0]),
                                                        (left, green.shape[1]), (right, green.shape[1])))
    outline[[r0, r1], c0:c1 + 1] = True
    outline[r0:r1 + 1, [c0, c1]] = True
    on_outline = (outline & _dilate(green, 3)).sum() / outline.sum()
    print(f"SR box outline drawn on {on_outline:.3f} of its length")
    assert on_outline >= 0.9, "the report's region is drawn where the SR puts it"
