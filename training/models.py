"""Image encoder and downstream classifier (the network radpair serves through Triton).

The image encoder is a MONAI 3D ResNet whose stage outputs are read as MONAI's ``ResNetFeatures``
does; a self-attention layer on the last stage (query/key/value from 1×1×1 convolutions, output
added residually) gives the global representation, and its attention weights — how much each
last-stage position is attended to, averaged over queries — are the explainability map. The
third stage is the local (patch) representation used by the contrastive local loss.

``build_classifier(config)`` is the contract with the Triton exporter: ``forward(x)`` on
``[B, 1, D, H, W]`` returns ``(probabilities [B, K], attention [B, D, H, W] in [0, 1],
embedding [B, E])``, with no data-dependent Python control flow so ``torch.jit.trace`` works.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from torch import nn

log = logging.getLogger(__name__)

# MONAI/MedicalNet ResNet depths -> (block, blocks per stage).
DEPTHS: dict[int, tuple[str, list[int]]] = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
}

DEFAULT_CONFIG: dict[str, Any] = {
    "depth": 18,
    "widths": [64, 128, 256, 512],
    "in_channels": 1,
    # Stem stride 2 and no max-pool: a 64³ input gives a 4³ last stage (64 attention positions).
    "stem_stride": 2,
    "max_pool": False,
    "frozen_stages": 2,
    "dropout": 0.25,
    "head_hidden": 256,
}


def resolve_config(config: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults filled in and unknown keys refused, so a typo never silently trains the default.
    ``num_classes`` (the task's) has no default: the encoder alone does not need it."""
    config = dict(config or {})
    unknown = set(config) - {*DEFAULT_CONFIG, "num_classes"}
    if unknown:
        raise ValueError(f"unknown image model key(s): {', '.join(sorted(unknown))}")
    resolved = {**DEFAULT_CONFIG, **config}
    if resolved["depth"] not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {resolved['depth']}")
    if len(resolved["widths"]) != 4:
        raise ValueError("widths must list four stage widths")
    if not 0 <= resolved["frozen_stages"] <= 4:
        raise ValueError("frozen_stages must be between 0 and 4")
    resolved["widths"] = [int(w) for w in resolved["widths"]]
    return resolved


class SelfAttention3d(nn.Module):
    """Non-local self-attention over the positions of a 3D feature map, added residually."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv3d(channels, inner, 1)
        self.key = nn.Conv3d(channels, inner, 1)
        self.value = nn.Conv3d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.scale = inner**-0.5

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the weighted feature map (same shape) and the weights ``[B, N, N]`` (query × key)."""
        q = self.query(x).flatten(2).transpose(1, 2)
        k = self.key(x).flatten(2)
        v = self.value(x).flatten(2)
        weights = torch.softmax(torch.bmm(q, k) * self.scale, dim=-1)
        out = torch.bmm(v, weights.transpose(1, 2)).view_as(x)
        return x + self.gamma * out, weights


class ImageEncoder(nn.Module):
    """3D ResNet stages + last-stage self-attention; first ``frozen_stages`` stages frozen."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.config = resolve_config(config)
        block, layers = DEPTHS[self.config["depth"]]
        self.backbone = ResNet(
            block=block,
            layers=layers,
            block_inplanes=self.config["widths"],
            spatial_dims=3,
            n_input_channels=self.config["in_channels"],
            conv1_t_stride=self.config["stem_stride"],
            no_max_pool=not self.config["max_pool"],
            feed_forward=False,
            shortcut_type="B",
        )
        expansion = 4 if block == "bottleneck" else 1
        self.local_channels = self.config["widths"][2] * expansion
        self.out_channels = self.config["widths"][3] * expansion
        self.attention = SelfAttention3d(self.out_channels)
        self.frozen = self._frozen_modules(self.config["frozen_stages"])
        for module in self.frozen:
            module.requires_grad_(False)

    def _frozen_modules(self, stages: int) -> list[nn.Module]:
        bb = self.backbone
        if stages == 0:
            return []
        return [bb.conv1, bb.bn1, *[getattr(bb, f"layer{i}") for i in range(1, stages + 1)]]

    def train(self, mode: bool = True) -> "ImageEncoder":
        """Frozen stages stay in eval mode so their batch-norm statistics do not drift either."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``local`` (stage 3 map), ``features`` (attended stage 4 map), ``global`` (pooled),
        ``weights`` (self-attention ``[B, N, N]``)."""
        bb = self.backbone
        h = bb.act(bb.bn1(bb.conv1(x)))
        h = bb.maxpool(h) if not bb.no_max_pool else h
        h = bb.layer2(bb.layer1(h))
        local = bb.layer3(h)
        features, weights = self.attention(bb.layer4(local))
        return {
            "local": local,
            "features": features,
            "global": features.mean(dim=(2, 3, 4)),
            "weights": weights,
        }


def attention_map(weights: torch.Tensor, grid: torch.Size | tuple[int, ...], size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """How much each position is attended (mean over queries), min–max normalised to [0, 1] per
    volume and trilinearly upsampled from the last-stage ``grid`` to the input ``size``."""
    received = weights.mean(dim=1).reshape(weights.shape[0], 1, *grid)
    low = received.flatten(1).min(dim=1).values.view(-1, 1, 1, 1, 1)
    high = received.flatten(1).max(dim=1).values.view(-1, 1, 1, 1, 1)
    normalised = (received - low) / (high - low + 1e-8)
    up = F.interpolate(normalised, size=size, mode="trilinear", align_corners=False)
    return up.squeeze(1).clamp(0.0, 1.0)


class Classifier(nn.Module):
    """Image encoder + MLP head; the served model (contract 4)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = resolve_config(config)
        if int(self.config.get("num_classes", 0)) < 2:
            raise ValueError("the classifier's config needs num_classes >= 2 (the task's classes)")
        self.encoder = ImageEncoder(self.config)
        self.head = nn.Sequential(
            nn.Dropout(self.config["dropout"]),
            nn.Linear(self.encoder.out_channels, self.config["head_hidden"]),
            nn.ReLU(inplace=True),
            nn.Dropout(self.config["dropout"]),
            nn.Linear(self.config["head_hidden"], self.config["num_classes"]),
        )

    def forward_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, attention, embedding)``: what training needs (CE works on logits)."""
        out = self.encoder(x)
        attention = attention_map(out["weights"], out["features"].shape[2:], x.shape[2:])
        return self.head(out["global"]), attention, out["global"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, attention, embedding = self.forward_logits(x)
        return torch.softmax(logits, dim=1), attention, embedding


def build_classifier(config: dict[str, Any]) -> Classifier:
    """The classifier described by ``model_config.json`` (missing keys but ``num_classes`` take the defaults)."""
    return Classifier(config)


def load_image_checkpoint(encoder: ImageEncoder, path: str | Path) -> None:
    """Load a local image-encoder checkpoint into ``encoder``; no downloads.

    Accepts a radpair contrastive/fine-tuning checkpoint (keys ``encoder.…`` / ``image_encoder.…``
    or bare encoder keys) or a MedicalNet-format ResNet state dict (``state_dict`` with
    ``module.conv1.weight``, ``module.layer1.…``), which maps onto the backbone.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = encoder.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        for prefix in ("module.", "image_encoder.", "encoder."):
            key = key.removeprefix(prefix)
        name = next((c for c in (key, f"backbone.{key}") if c in own), None)
        if name is None:
            continue
        if own[name].shape != value.shape:
            raise ValueError(f"{path}: tensor {key} has shape {tuple(value.shape)}, the encoder expects "
                             f"{tuple(own[name].shape)} (different depth/widths?)")
        mapped[name] = value
    if not mapped:
        raise ValueError(f"{path}: no tensor matches the image encoder (not an encoder checkpoint)")
    encoder.load_state_dict(mapped, strict=False)
    log.info("loaded %d/%d image encoder tensors from %s", len(mapped), len(own), path)
