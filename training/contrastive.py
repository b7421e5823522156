"""What pre-training optimises: the image–report contrastive model, and the image-only baseline.

Contrastive (the paper): the attended image representation and the report's embedding, projected
to a shared space, under the location-weighted global loss (triplet or InfoNCE); and, locally,
every report word attending over the image's regions (GLoRIA), under a location-weighted InfoNCE
on the word–region pair scores. Because the global image representation is the attention-pooled
regions, aligning it with a report that describes a lesion teaches the attention where the lesion
is, with no mask. Image-only (the "generic" baseline): SimSiam on two augmented views — projector,
predictor, stop-gradient — which, unlike a siamese network without them, does not collapse.

Projection heads normalise with batch statistics over the *global* batch (all ranks), so a
distributed run computes exactly what one process computes on the same batch; in-batch negatives
are gathered across ranks too (``torch.distributed.nn.functional.all_gather`` keeps gradients).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F
from torch import nn

from radpair.training.batchnorm import GlobalBatchNorm1d
from radpair.training.config import TrainConfig
from radpair.training.losses import (
    LearnedWeighting,
    global_triplet_loss,
    info_nce_loss,
    simsiam_loss,
    word_region_loss,
)
from radpair.training.models import ImageEncoder
from radpair.training.text import TextEncoder


def gather(t: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in rank order, with gradients flowing back to each rank's own rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    return torch.cat(dist_fn.all_gather(t.contiguous()), dim=0)


def projection(in_dim: int, out_dim: int, batch_norm: bool = True, output_norm: bool = False) -> nn.Sequential:
    """Linear–(BatchNorm)–ReLU–Linear(–BatchNorm). ``batch_norm`` (SimCLR's projector) centres the
    batch, so embeddings of pooled ReLU features, nearly collinear from the start, do not collapse
    onto one direction under a cosine loss; without it this is the paper's head. ``output_norm``
    also normalises the output, as SimSiam's projector does (without negatives, nothing else keeps
    its outputs from sharing one direction)."""
    norm = [GlobalBatchNorm1d(out_dim)] if batch_norm else []
    out = [GlobalBatchNorm1d(out_dim, affine=False)] if output_norm else []
    return nn.Sequential(nn.Linear(in_dim, out_dim), *norm, nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim), *out)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class ContrastiveModel(nn.Module):
    """Everything pre-training optimises; ``image_encoder`` is what fine-tuning reuses."""

    def __init__(self, config: TrainConfig, text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        self.config = config
        p = config.pretrain
        self.image_encoder = ImageEncoder(config.image.encoder_config())
        d = p.embed_dim
        bn = p.projection_batch_norm
        self.contrastive = p.mode == "contrastive"
        self.image_global = projection(self.image_encoder.out_channels, d, bn, output_norm=not self.contrastive)
        if self.contrastive:
            self.text_encoder = text_encoder or TextEncoder(
                config.text.model_path, config.text.frozen_layers, config.text.pooling, config.text.max_length
            )
            self.text_global = projection(self.text_encoder.hidden_size, d, bn)
        else:  # SimSiam's predictor (a bottleneck MLP), on top of the shared projector
            self.predictor = nn.Sequential(nn.Linear(d, d // 4), GlobalBatchNorm1d(d // 4), nn.ReLU(inplace=True),
                                           nn.Linear(d // 4, d))
        self.use_local = self.contrastive and p.local_loss
        if self.use_local:
            self.image_local = nn.Linear(self.image_encoder.region_channels, d)
            self.text_local = nn.Linear(self.text_encoder.hidden_size, d)
        self.use_global = p.global_loss or not self.contrastive
        n_terms = int(self.use_global) + int(self.use_local)
        self.weighting = LearnedWeighting(n_terms) if p.learned_weighting and n_terms > 1 else None

    def embed(self, images: torch.Tensor, text: dict[str, torch.Tensor] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample vectors of this rank: ``image``, ``text`` (the report's, or the second view's),
        and for the local loss ``regions`` [B, R, d], ``words`` [B, W, d] and ``word_mask``.

        ``text``: tokens (``TextEncoder.tokenize``), reports already encoded by a frozen encoder
        (``EncodedReports.batch``: it has ``global``), or, image-only, the second augmented view."""
        img = self.image_encoder(images)
        out = {"image": self.image_global(img["global"])}
        if not self.contrastive:
            out["text"] = self.image_global(self.image_encoder(text)["global"])
            return out
        txt = text if "global" in text else self.text_encoder(text)
        out["text"] = self.text_global(txt["global"])
        if self.use_local:
            regions = F.avg_pool3d(img["regions"], self.config.pretrain.local_pool) if self.config.pretrain.local_pool > 1 \
                else img["regions"]
            out["regions"] = self.image_local(regions.flatten(2).transpose(1, 2))
            # Fixed word length, so every rank's rows have one shape to gather.
            pad = self.config.text.max_length - txt["local"].shape[1]
            out["words"] = self.text_local(F.pad(txt["local"], (0, 0, 0, pad)))
            out["word_mask"] = F.pad(txt["word_mask"], (0, pad))
        return out

    def forward(
        self, images: torch.Tensor, text: dict[str, torch.Tensor] | torch.Tensor, locations: torch.Tensor,
        generator: torch.Generator,
    ) -> dict[str, torch.Tensor]:
        """Embed this rank's rows and return the global-batch losses (a DDP-friendly forward)."""
        return self.loss(self.embed(images, text), locations, generator)

    def loss(self, embedded: dict[str, torch.Tensor], locations: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Losses over the global batch (all ranks' rows); ``total`` is what is optimised."""
        p = self.config.pretrain
        if not self.contrastive:
            z1, z2 = embedded["image"], embedded["text"]
            loss = simsiam_loss(self.predictor(z1), self.predictor(z2), z1, z2)
            return {"global": loss, "total": loss}
        e = {k: gather(v.float() if v.is_floating_point() else v) for k, v in embedded.items()}
        locations = gather(locations)
        weighting = locations if p.location_weighting else None
        parts: dict[str, torch.Tensor] = {}
        if self.use_global:
            if p.loss == "infonce":
                parts["global"] = info_nce_loss(e["image"], e["text"], p.temperature, weighting, p.location_coefficient)
            else:
                parts["global"] = global_triplet_loss(e["image"], e["text"], p.margin, p.negatives_k, weighting,
                                                      p.location_coefficient, generator)
        if self.use_local:
            parts["local"] = word_region_loss(e["words"], e["word_mask"], e["regions"], weighting,
                                              p.location_coefficient, p.local_temperature)
        terms = list(parts.values())
        parts["total"] = self.weighting(terms) if self.weighting is not None else torch.stack(terms).sum()
        return parts
