"""Small checks the tests share: waiting for a condition, dciodvfy, reading an SR's content."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom

DCIODVFY = shutil.which("dciodvfy")


def wait_for(what: str, check: Callable[[], object], timeout: float = 120.0, every: float = 0.25) -> object:
    """Poll ``check`` until it returns something true (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def dciodvfy_errors(path: Path) -> list[str]:
    """The error lines dicom3tools' conformance checker prints for a file (empty: it conforms)."""
    assert DCIODVFY is not None, "dciodvfy (Debian package dicom3tools) is not installed: run `make sysdeps`"
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def text_items(item: pydicom.Dataset) -> Iterator[tuple[tuple[str, str], str]]:
    """(scheme, code) -> TextValue of every TEXT content item under ``item``."""
    for child in item.get("ContentSequence", []):
        if child.ValueType == "TEXT":
            concept = child.ConceptNameCodeSequence[0]
            yield (concept.CodingSchemeDesignator, concept.CodeValue), child.TextValue
        yield from text_items(child)


def code_items(item: pydicom.Dataset) -> Iterator[tuple[str, tuple[str, str]]]:
    """(concept meaning, (scheme, value)) of every CODE content item under ``item``."""
    for child in item.get("ContentSequence", []):
        if child.ValueType == "CODE":
            value = child.ConceptCodeSequence[0]
            yield child.ConceptNameCodeSequence[0].CodeMeaning, (value.CodingSchemeDesignator, value.CodeValue)
        yield from code_items(child)
