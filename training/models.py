"""Image encoder and downstream classifier (the network radpair serves through Triton).

The image encoder is a MONAI 3D ResNet. Its stages are merged top-down into one feature map on a
fine grid (a feature pyramid: each deeper stage is projected by a 1×1×1 convolution, upsampled and
added to the shallower one), so every region of ``attention_stage``'s grid — 16³ for a 64³ input
with a stride-2 stem, 12 mm cells — sees both local detail and deep context. A small head on the
stage below the grid scores each cell's evidence from what is in it (``evidence="local"``; scored
on the merged features instead, the attention learnt to settle beside the lesion); the softmax of
the scores over the regions is the attention, the attention-weighted mean of the regions (and the attention's centroid, where the finding is) is the
global representation, and the attention, upsampled to the input, is the explanation. Pre-training
trains it by aligning the attended image with its report; fine-tuning by the lesion and class
losses. (The paper's self-attention on the last stage gives a 4³ grid at 64³, too coarse to put a
map on a lesion of 10 voxels.)

Two choices keep the evidence where the finding is. The classifier reads "is there a lesion" from
the evidence itself (``lesion_score="evidence"``: log-mean-exp over the cells, multiple-instance
learning), so lesion-free studies teach it to stay low on normal anatomy and a lesion study to
peak somewhere; and the layers under the evidence normalise with batch statistics
(``norm="mixed"``): with instance norm there, a lesion anywhere shifts every channel's per-study
mean and variance, every cell can tell that the study holds a lesion, and the peak lands anywhere
(``tests/training/test_models.py`` shows both).

``build_classifier(config)`` is the contract with the Triton exporter (``members: k`` in the config
builds the :class:`Ensemble` of a cross-validation's k fold models): ``forward(x)`` on
``[B, 1, D, H, W]`` returns ``(probabilities [B, K], lesion [B, 1], attention [B, D, H, W] in
[0, 1], embedding [B, E])`` with no data-dependent Python control flow, so ``torch.jit.trace`` works.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from monai.networks.nets import ResNet
from torch import nn

from radpair.training.batchnorm import GlobalBatchNorm3d

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
    "stem_stride": 2,
    "max_pool": False,
    # "mixed": batch statistics in the stem and the stages below the attention grid, which the
    # evidence reads, and per-study (instance) statistics above. Instance norm there would make every
    # cell's evidence depend on the whole volume (a lesion anywhere shifts each channel's mean), so
    # the attention could say "there is a lesion" from anywhere. "instance" everywhere (per-study
    # statistics, robust to a scanner's intensity scale) or "batch" everywhere (MedicalNet).
    "norm": "mixed",
    # The stage whose grid the attention lives on (1-4): 2 gives input / (4 · stem stride / 2).
    "attention_stage": 2,
    # Channels of the merged region features.
    "region_channels": 128,
    # What scores a region's evidence: "regions" (the merged features, deep context included) or
    # "local" (a small head on the stage below the attention grid, max-pooled onto it: evidence
    # from what is in the cell, so the attention cannot settle beside the finding).
    "evidence": "local",
    # Where "is there a lesion" is read: "evidence" (the log-sum-exp of the cells' evidence, as in
    # multiple-instance learning: a study holds a lesion when some cell does, so lesion-free
    # studies teach the evidence, and with it the attention, to stay low on normal anatomy) or
    # "head" (a linear head on the attended representation, which never has to say where).
    "lesion_score": "evidence",
    # Voxels per side of the region of interest cut from the input around the attention's centroid
    # and read by a small CNN for the class head (what the lesion looks like: size, cyst, margin,
    # texture, at the input's resolution rather than the attention grid's); 0: no such branch.
    "roi_size": 20,
    # The encoder reads the input average-pooled by this factor (0.75: a 64³ input at 3 mm is read
    # at 48³, 4 mm), the region-of-interest branch the full input: a lesion's margin at the
    # scanner's resolution for the cost of a coarser encoder.
    "encoder_scale": 1.0,
    "frozen_stages": 0,
    "dropout": 0.25,
    "head_hidden": 256,
}

# What a model_config.json written before a key existed means by leaving it out.
LEGACY_CONFIG: dict[str, Any] = {"lesion_score": "head", "roi_size": 0}


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
    if not 1 <= resolved["attention_stage"] <= 4:
        raise ValueError("attention_stage must be between 1 and 4")
    if resolved["evidence"] not in ("regions", "local"):
        raise ValueError(f"evidence must be 'regions' or 'local', got {resolved['evidence']!r}")
    if resolved["lesion_score"] not in ("evidence", "head"):
        raise ValueError(f"lesion_score must be 'evidence' or 'head', got {resolved['lesion_score']!r}")
    if resolved["roi_size"] != 0 and resolved["roi_size"] < 8:
        raise ValueError(f"roi_size must be 0 (off) or at least 8 voxels, got {resolved['roi_size']}")
    if not 0.0 < float(resolved["encoder_scale"]) <= 1.0:
        raise ValueError(f"encoder_scale must be in (0, 1], got {resolved['encoder_scale']}")
    if resolved["norm"] not in ("mixed", "instance", "batch"):
        raise ValueError(f"norm must be 'mixed', 'instance' or 'batch', got {resolved['norm']!r}")
    resolved["widths"] = [int(w) for w in resolved["widths"]]
    return resolved


def _replace_batch_norms(module: nn.Module, make: Callable[[int], nn.Module]) -> None:
    """Replace every BatchNorm3d under ``module`` by ``make(channels)`` (MONAI's ResNet applies its
    ``norm`` to the stem only; its blocks and shortcuts keep BatchNorm)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm3d):
            setattr(module, name, make(child.num_features))
        else:
            _replace_batch_norms(child, make)


def _instance_norm(channels: int) -> nn.Module:
    """Per-study statistics: batch statistics tie a study's features to its batch mates and, in eval
    mode, to the training site's running averages, which another scanner's intensities do not match."""
    return nn.InstanceNorm3d(channels, affine=True)


class ImageEncoder(nn.Module):
    """3D ResNet stages, merged top-down onto the attention grid, scored and attention-pooled."""

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
        self._set_norms(self.config["norm"], self.config["attention_stage"])
        expansion = 4 if block == "bottleneck" else 1
        stage = self.config["attention_stage"]
        widths = [w * expansion for w in self.config["widths"]]
        channels = self.config["region_channels"]
        self.lateral = nn.ModuleList(nn.Conv3d(w, channels, 1) for w in widths[stage - 1:])
        # No normalisation here: an instance norm would fix every channel's mean over the regions,
        # so the attended mean would be nearly the same vector for every study.
        self.smooth = nn.Sequential(nn.Conv3d(channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        if self.config["evidence"] == "local":
            below = widths[stage - 2] if stage > 1 else self.config["widths"][0]
            self.evidence = nn.Sequential(nn.Conv3d(below, channels // 2, 3, padding=1), nn.ReLU(inplace=True),
                                          nn.Conv3d(channels // 2, 1, 1))
        else:
            self.evidence = nn.Conv3d(channels, 1, 1)
        self.out_channels = channels + 3  # attended regions + the attention's centroid
        self.region_channels = channels
        self.frozen = self._frozen_modules(self.config["frozen_stages"])
        for module in self.frozen:
            module.requires_grad_(False)

    def _set_norms(self, kind: str, stage: int) -> None:
        """Batch statistics (over the global batch) where ``kind`` says, instance statistics elsewhere."""
        bb = self.backbone

        def norm(batch: bool) -> Callable[[int], nn.Module]:
            return GlobalBatchNorm3d if batch else _instance_norm

        bb.bn1 = norm(kind != "instance")(bb.bn1.num_features)
        for i in range(1, 5):
            _replace_batch_norms(getattr(bb, f"layer{i}"), norm(kind == "batch" or (kind == "mixed" and i < stage)))

    def _frozen_modules(self, stages: int) -> list[nn.Module]:
        bb = self.backbone
        if stages == 0:
            return []
        return [bb.conv1, bb.bn1, *[getattr(bb, f"layer{i}") for i in range(1, stages + 1)]]

    def train(self, mode: bool = True) -> "ImageEncoder":
        """Frozen stages stay in eval mode so their normalisation statistics do not drift either."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``regions`` [B, C, g, g, g], ``evidence`` [B, g³] (the cells' scores), ``attention`` [B, g³]
        (their softmax), ``global`` [B, C + 3] (attended regions and the attention's centroid in [-1, 1]³)."""
        bb = self.backbone
        scale = float(self.config["encoder_scale"])
        if scale != 1.0:
            x = F.adaptive_avg_pool3d(x, [max(1, round(int(n) * scale)) for n in x.shape[2:]])
        h = bb.act(bb.bn1(bb.conv1(x)))
        h = bb.maxpool(h) if not bb.no_max_pool else h
        stem = h
        stages = []
        for i in range(1, 5):
            h = getattr(bb, f"layer{i}")(h)
            stages.append(h)
        stage = self.config["attention_stage"]
        below = stages[stage - 2] if stage > 1 else stem
        stages = stages[stage - 1:]
        merged = self.lateral[-1](stages[-1])
        for lateral, feature in zip(reversed(self.lateral[:-1]), reversed(stages[:-1])):
            merged = lateral(feature) + F.interpolate(merged, size=feature.shape[2:], mode="trilinear", align_corners=False)
        regions = self.smooth(merged)
        flat = regions.flatten(2)
        if self.config["evidence"] == "local":
            evidence = F.adaptive_max_pool3d(self.evidence(below), regions.shape[2:])
        else:
            evidence = self.evidence(regions)
        evidence = evidence.flatten(1)
        attention = torch.softmax(evidence, dim=1)
        attended = torch.bmm(flat, attention.unsqueeze(2)).squeeze(2)
        grid = _grid(regions.shape[2:], regions.device, regions.dtype)
        centroid = attention @ grid
        return {"regions": regions, "evidence": evidence, "attention": attention,
                "global": torch.cat([attended, centroid], dim=1)}


def _grid(shape: torch.Size | tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Region centres in [-1, 1]³, one row per region in the order ``flatten`` gives."""
    axes = [torch.linspace(-1.0, 1.0, int(n), device=device, dtype=dtype) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def attention_map(attention: torch.Tensor, grid: torch.Size | tuple[int, ...], size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Region attention ``[B, g³]`` as a map on the input grid: divided by its maximum (the most
    attended region is 1) and trilinearly upsampled to ``size``."""
    peak = attention.max(dim=1, keepdim=True).values
    scaled = (attention / (peak + 1e-12)).reshape(attention.shape[0], 1, *grid)
    up = F.interpolate(scaled, size=size, mode="trilinear", align_corners=False)
    return up.squeeze(1).clamp(0.0, 1.0)


def crop_around(x: torch.Tensor, centre: torch.Tensor, grid: torch.Size | tuple[int, ...], size: int) -> torch.Tensor:
    """The ``size``³ voxels of ``x`` [B, C, D, H, W] centred on ``centre`` [B, 3], a point of the
    attention grid's [-1, 1]³ frame (:func:`_grid`, (D, H, W) order), resampled trilinearly; zero
    outside the volume. Trace-friendly: the volume's and the grid's sizes become constants."""
    dims = x.shape[2:]
    # A grid coordinate of ±1 is the centre of a corner cell, (cell - 1) / 2 voxels inside the volume.
    to_volume = [(n - n / g) / (n - 1) for n, g in zip(dims, grid)]
    scale = [(size - 1) / (n - 1) for n in dims]
    centre_xyz = (centre * centre.new_tensor(to_volume)).flip(1)  # affine_grid's order is (W, H, D)
    rotation = torch.diag(centre.new_tensor(scale[::-1])).expand(x.shape[0], 3, 3)
    theta = torch.cat([rotation, centre_xyz.unsqueeze(2)], dim=2)
    sampling = F.affine_grid(theta, [x.shape[0], x.shape[1], size, size, size], align_corners=True)
    return F.grid_sample(x, sampling, mode="bilinear", padding_mode="zeros", align_corners=True)


def _roi_network(width: int) -> nn.Sequential:
    """Three conv–norm–ReLU blocks with two poolings: a 4 × ``width``-channel map, whose mean and
    max over space (8 × ``width`` features) the classifier adds to the class head's input."""
    layers: list[nn.Module] = []
    channels = 1
    for i, out in enumerate((width, 2 * width, 4 * width)):
        layers += [nn.Conv3d(channels, out, 3, padding=1), GlobalBatchNorm3d(out), nn.ReLU(inplace=True)]
        layers += [nn.MaxPool3d(2)] if i < 2 else []
        channels = out
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """Image encoder + two heads: is there a lesion (from the evidence map), which class (from the
    attended representation and, with ``roi_size``, a look at the input around the finding)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = resolve_config(config)
        if int(self.config.get("num_classes", 0)) < 2:
            raise ValueError("the classifier's config needs num_classes >= 2 (the task's classes)")
        self.encoder = ImageEncoder(self.config)
        hidden, dropout = self.config["head_hidden"], self.config["dropout"]
        roi_features = 0
        if self.config["roi_size"]:
            width = self.config["widths"][0]
            self.roi = _roi_network(width)
            roi_features = 8 * width
        self.trunk = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.encoder.out_channels + roi_features, hidden),
                                   nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.class_head = nn.Linear(hidden, self.config["num_classes"])
        if self.config["lesion_score"] == "evidence":
            self.lesion_offset = nn.Parameter(torch.zeros(1))
        else:
            self.lesion_head = nn.Linear(hidden, 1)

    def _lesion_logit(self, evidence: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        if self.config["lesion_score"] == "head":
            return self.lesion_head(hidden).squeeze(1)
        # log-mean-exp (log-sum-exp minus log(cells)): the evidence of a flat map, the peak of a focal one.
        evidence = evidence.float()
        peak = evidence.amax(dim=1, keepdim=True).detach()
        return (torch.log(torch.exp(evidence - peak).mean(dim=1)) + peak.squeeze(1)) + self.lesion_offset

    def forward_logits(self, x: torch.Tensor, class_trains_encoder: bool = True) -> dict[str, torch.Tensor]:
        """``class_logits`` [B, K], ``lesion_logit`` [B], ``attention`` [B, D, H, W], ``embedding``.

        With ``class_trains_encoder`` false the class head reads the encoder's representation
        without training it (the encoder learns from pre-training and the lesion loss)."""
        out = self.encoder(x)
        features = out["global"] if class_trains_encoder else out["global"].detach()
        if self.config["roi_size"]:
            # Where to look is the attention's business (the lesion loss); the class loss only reads.
            centre = features[:, -3:].detach()
            roi = self.roi(crop_around(x, centre, out["regions"].shape[2:], self.config["roi_size"]))
            features = torch.cat([features, roi.mean(dim=(2, 3, 4)), roi.amax(dim=(2, 3, 4))], dim=1)
        hidden = self.trunk(features)
        return {
            "class_logits": self.class_head(hidden),
            "lesion_logit": self._lesion_logit(out["evidence"], hidden),
            "attention": attention_map(out["attention"], out["regions"].shape[2:], x.shape[2:]),
            "embedding": out["global"],
        }

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.forward_logits(x)
        return (torch.softmax(out["class_logits"], dim=1), torch.sigmoid(out["lesion_logit"]).unsqueeze(1),
                out["attention"], out["embedding"])


class Ensemble(nn.Module):
    """The k fold models of one cross-validation, served as one (as nnU-Net serves its folds).

    One fold model is trained on (k-1)/k of the studies, and its attention depends on its split and
    initialisation; the mean of the folds' probabilities is steadier than any one fold,
    and the mean of their attention maps (rescaled so its most attended voxel is 1 again) keeps what
    they agree on. Same outputs as a :class:`Classifier`, so the export and serving do not change."""

    def __init__(self, config: dict[str, Any], members: int) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {members}")
        self.members = nn.ModuleList(Classifier(config) for _ in range(members))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        outs = [member(x) for member in self.members]
        probabilities, lesion, attention, embedding = (torch.stack(parts).mean(dim=0) for parts in zip(*outs))
        peak = attention.flatten(1).max(dim=1).values.reshape(-1, 1, 1, 1)
        return probabilities, lesion, attention / (peak + 1e-12), embedding


def build_classifier(config: dict[str, Any]) -> Classifier | Ensemble:
    """The classifier described by ``model_config.json`` (missing keys but ``num_classes`` take the
    defaults); with ``members: k`` (k >= 2), the ensemble of k of them."""
    config = dict(config)
    members = int(config.pop("members", 1))
    return Ensemble(config, members) if members > 1 else Classifier(config)


def load_image_checkpoint(encoder: ImageEncoder, path: str | Path) -> None:
    """Load a local image-encoder checkpoint into ``encoder``; no downloads.

    Accepts a radpair pre-training/fine-tuning checkpoint (keys ``encoder.…`` / ``image_encoder.…``
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
