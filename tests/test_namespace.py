"""One installed namespace: everything is radpair.*, and no layer folder loads under a second name."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

LAYERS = ("core", "listener", "pipeline", "serving", "training", "retrain")


@pytest.mark.parametrize("layer", LAYERS)
def test_a_layer_is_radpair_dot_layer_and_nothing_else(layer: str, tmp_path: Path) -> None:
    assert importlib.util.find_spec(f"radpair.{layer}") is not None
    assert importlib.util.find_spec(layer) is None, f"`import {layer}` would load radpair's {layer}/ a second time"
    # The same in a fresh interpreter, run from a folder with no checkout in it.
    done = subprocess.run([sys.executable, "-c", f"import radpair.{layer}\nimport {layer}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and f"No module named '{layer}'" in done.stderr, done.stderr


def test_the_shipped_task_and_model_are_package_data() -> None:
    from radpair.core.task import default_task_path
    from radpair.serving.repository import shipped_repository

    assert default_task_path().is_file()
    assert (shipped_repository() / "radpair_classifier" / "config.pbtxt").is_file()
