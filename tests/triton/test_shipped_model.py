"""The model shipped in triton_models/ is what triton_models/make_model.sh produces.

The script is run end to end (cohort → fine-tuning → export) with tiny settings (8 small studies,
one epoch); the exported version must have the shipped version's architecture: the same model config,
the same TorchScript parameter names and shapes, the same Triton signature. The shipped version
itself must be a trained run with its metrics and data snapshot, and small enough to commit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import torch

from radpair.serving.repository import PYTHON_MODEL, ModelRepository, read_config, shipped_repository

MODEL = "radpair_classifier"
SCRIPT = shipped_repository() / "make_model.sh"


def _shapes(model_pt: Path) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in torch.jit.load(str(model_pt)).state_dict().items()}


def test_shipped_model_is_a_trained_small_run() -> None:
    shipped = ModelRepository(shipped_repository())
    files = shipped.version(MODEL, shipped.current(MODEL))
    card = files.card()
    config = tomllib.loads((shipped_repository() / "shipped_model.toml").read_text())
    assert card["training_config"]["image"]["widths"] == config["image"]["widths"]
    assert card["training_config"]["finetune"]["epochs"] == config["finetune"]["epochs"]
    assert card["metrics"]["internal"]["auc"]["mean"] >= 0.0 and card["data_snapshot"]["studies"]
    assert card["parity_max_abs_diff"] < 1e-4
    size = sum(p.stat().st_size for p in shipped_repository().rglob("*") if p.is_file() and not p.is_symlink())
    assert size < 20e6, f"triton_models/ holds {size / 1e6:.1f} MB"


def test_make_model_script_reproduces_the_shipped_architecture(tmp_path: Path) -> None:
    env = {**os.environ, "N": "8", "SIZE": "24 48 48", "REPO": str(tmp_path / "repo"), "WORK": str(tmp_path / "work"),
           "RADPAIR": str(Path(sys.executable).with_name("radpair"))}
    done = subprocess.run([str(SCRIPT), "--set", "finetune.epochs=1", "--set", "finetune.warmup_epochs=0"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    shipped, rebuilt = ModelRepository(shipped_repository()), ModelRepository(tmp_path / "repo")
    old = shipped.version(MODEL, shipped.current(MODEL))
    new = rebuilt.version(MODEL, 1)
    assert new.card()["model_config"] == old.card()["model_config"]
    assert new.preprocess() == old.preprocess()
    assert _shapes(new.path / "model.pt") == _shapes(old.path / "model.pt")

    def signature(root: Path) -> list:
        config = read_config(root / MODEL / "config.pbtxt")
        return [(t.name, list(t.dims)) for t in (*config.input, *config.output)]

    assert signature(tmp_path / "repo") == signature(shipped_repository())


def test_every_shipped_version_runs_the_one_python_model_source() -> None:
    """``model.py`` in a version folder is a copy the exporter makes of radpair/serving/triton_model.py."""
    shipped = ModelRepository(shipped_repository())
    for files in shipped.versions(MODEL):
        assert (files.path / "model.py").read_bytes() == PYTHON_MODEL.read_bytes(), files.path
