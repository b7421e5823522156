"""Small real models for tests: the classifier radpair ships, in a narrow configuration, exported by
radpair's own exporter; a tiny training configuration and task; a stand-in model gateway."""

from __future__ import annotations

import tomllib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from radpair.core.gateway import ServingModel
from radpair.core.model_card import OperatingPoints
from radpair.core.preprocess import PreprocessParams
from radpair.core.task import default_task_path, load_task
from radpair.training.export import export_model
from radpair.training.models import build_classifier

MODEL = "radpair_classifier"
CLASSES = load_task().class_names
SMALL = {"depth": 10, "widths": [8, 8, 16, 16], "head_hidden": 16, "region_channels": 8, "dropout": 0.0,
         "num_classes": len(CLASSES)}
PARAMS = PreprocessParams(spatial_size=(32, 32, 32))

# A small, fast training configuration for CPU tests: ResNet-10 with narrow stages, short text.
TINY = [
    "image.depth=10", "image.widths=[8, 16, 32, 64]", "image.head_hidden=16", "image.region_channels=16",
    "text.max_length=48", "pretrain.embed_dim=32", "pretrain.batch_size=8",
    "finetune.batch_size=4", "finetune.folds=2", "finetune.warmup_epochs=1",
]


def small_classifier(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_classifier(SMALL).eval()


def export_small(repo: Path, seed: int) -> int:
    # An untrained model's lesion probability is noise: at threshold 0 every study is a lesion
    # study, so the tests that serve it see the full set of results (SR, SEG, map).
    metrics = {"auc": 0.5 + seed / 100, "operating_points": {"lesion_threshold": 0.0, "attention_threshold": 0.5}}
    return export_model(small_classifier(seed), PARAMS, CLASSES, {"run": f"test-seed-{seed}", "metrics": metrics},
                        repo, MODEL, "cpu", max_batch_size=8).version


def task_file(path: Path, source: Path | None = None, spatial_size: tuple[int, int, int] = (32, 32, 32),
              spacing: tuple[float, float, float] = (6.0, 6.0, 6.0), signal: str | None = None,
              **input_rule: object) -> Path:
    """A copy of a task file (default: the shipped one) at another preprocessing size, with changes
    to its ``[input]`` rule and, given ``signal``, its finding's signal; returns its path."""
    text = (source or default_task_path()).read_text()
    if signal is not None:
        old = next(line for line in text.splitlines() if line.startswith("signal ="))
        text = text.replace(old, f'signal = "{signal}"', 1)
    raw = tomllib.loads(text)
    lines = [line for line in text.splitlines() if not line.startswith(("spacing =", "spatial_size ="))]
    text = "\n".join(lines).replace("[input.preprocess]", f"[input.preprocess]\nspacing = {list(spacing)}\n"
                                                          f"spatial_size = {list(spatial_size)}")
    for key, value in input_rule.items():
        assert key in raw["input"], f"[input] has no key {key!r}"
        old = next(line for line in text.splitlines() if line.startswith(f"{key} ="))
        text = text.replace(old, f"{key} = {_toml(value)}", 1)
    path.write_text(text + "\n")
    load_task(path)  # a typo in a test's task fails here, not deep inside a job
    return path


def _toml(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


class BrightestVoxelModel:
    """A ModelGateway whose "model" attends to the brightest voxels, finds a lesion with probability
    ``lesion`` and always says the last class."""

    def __init__(self, params: PreprocessParams = PARAMS, classes: tuple[str, ...] = CLASSES, lesion: float = 0.9,
                 operating: OperatingPoints = OperatingPoints(lesion_threshold=0.5, attention_threshold=0.6)) -> None:
        self.calls = 0
        self.params = params
        self.classes = classes
        self.lesion = lesion
        self.operating = operating

    def serving(self, model_name: str) -> ServingModel:
        def infer(batch: np.ndarray) -> SimpleNamespace:
            self.calls += 1
            volume = batch[:, 0]
            probabilities = np.full((1, len(self.classes)), 0.25 / max(len(self.classes) - 1, 1))
            probabilities[0, -1] = 0.75
            return SimpleNamespace(probabilities=probabilities, lesion=np.full((1, 1), self.lesion),
                                   attention=np.clip(volume / max(float(volume.max()), 1e-6), 0, 1).astype(np.float32),
                                   model_version="3")
        return ServingModel(model_name, "3", self.params, self.classes, infer, self.operating,
                            ("internal cross-validation: class AUC 0.90 ± 0.02",))
