"""The image–report contrastive framework: encoders, projection heads, cross-attention, loss.

Global: the attended last-stage image representation and the report's CLS/mean embedding,
projected (Linear–ReLU–Linear) to a shared space. Local (GLoRIA-style word–region attention):
stage-3 image patches and report words, projected to the same space; one cross-attention module
lets patches attend to words, the other words to patches; each modality's original local
representation is contrasted with its cross-attended counterpart. In-batch negatives are
gathered across ranks under DDP (``torch.distributed.nn.functional.all_gather`` keeps gradients).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn

from radpair.training.config import TrainConfig
from radpair.training.losses import LearnedWeighting, global_triplet_loss, info_nce_loss, local_triplet_loss
from radpair.training.models import ImageEncoder
from radpair.training.text import TextEncoder


def projection(in_dim: int, out_dim: int, batch_norm: bool = False) -> nn.Sequential:
    """The paper's Linear–ReLU–Linear head; ``batch_norm`` puts BatchNorm before the ReLU (as SimCLR's
    projector does), which centres the batch so that embeddings of pooled ReLU features, nearly
    collinear from the start, do not collapse onto one direction under a cosine loss."""
    norm = [nn.BatchNorm1d(out_dim)] if batch_norm else []
    return nn.Sequential(nn.Linear(in_dim, out_dim), *norm, nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim))


def gather(t: torch.Tensor) -> torch.Tensor:
    """All ranks' rows, in rank order, with gradients flowing back to each rank's own rows."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    return torch.cat(dist_fn.all_gather(t), dim=0)


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
        self.image_global = projection(self.image_encoder.out_channels, d, bn)
        if p.mode == "contrastive":
            self.text_encoder = text_encoder or TextEncoder(
                config.text.model_path, config.text.frozen_layers, config.text.pooling, config.text.max_length
            )
            self.text_global = projection(self.text_encoder.hidden_size, d, bn)
        else:
            # Image-only baseline: the second augmented view goes through the same encoder.
            self.text_global = projection(self.image_encoder.out_channels, d, bn)
        self.use_local = p.mode == "contrastive" and p.local_loss
        if self.use_local:
            self.image_local = projection(self.image_encoder.local_channels, d)
            self.text_local = projection(self.text_encoder.hidden_size, d)
            self.patch_to_words = nn.MultiheadAttention(d, p.cross_attention_heads, batch_first=True)
            self.words_to_patches = nn.MultiheadAttention(d, p.cross_attention_heads, batch_first=True)
        self.use_global = p.global_loss or p.mode == "image_only"
        n_terms = int(self.use_global) + int(self.use_local)
        self.weighting = LearnedWeighting(n_terms) if p.learned_weighting and n_terms > 1 else None

    def embed(self, images: torch.Tensor, text: dict[str, torch.Tensor] | torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample vectors of this rank: global image/text and (if used) the four local ones.

        ``text``: tokens (``TextEncoder.tokenize``), reports already encoded by a frozen encoder
        (``EncodedReports.batch``: it has ``global``), or, image-only, the second view."""
        img = self.image_encoder(images)
        out = {"image": self.image_global(img["global"])}
        if self.config.pretrain.mode == "image_only":
            out["text"] = self.text_global(self.image_encoder(text)["global"])
            return out
        txt = text if "global" in text else self.text_encoder(text)
        out["text"] = self.text_global(txt["global"])
        if self.use_local:
            patches = self.image_local(img["local"].flatten(2).transpose(1, 2))
            words = self.text_local(txt["local"])
            word_mask = txt["word_mask"]
            patches_weighted, _ = self.patch_to_words(patches, words, words, key_padding_mask=~word_mask)
            words_weighted, _ = self.words_to_patches(words, patches, patches)
            out["image_local"] = patches.mean(1)
            out["image_weighted"] = patches_weighted.mean(1)
            out["text_local"] = masked_mean(words, word_mask)
            out["text_weighted"] = masked_mean(words_weighted, word_mask)
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
        e = {k: gather(v.float()) for k, v in embedded.items()}
        locations = gather(locations)
        k = p.negatives_k
        parts: dict[str, torch.Tensor] = {}
        if self.use_global:
            if p.loss == "infonce":
                parts["global"] = info_nce_loss(e["image"], e["text"], p.temperature)
            else:
                weighted = p.location_weighting and p.mode == "contrastive"
                parts["global"] = global_triplet_loss(
                    e["image"], e["text"], p.margin, k,
                    locations if weighted else None, p.location_coefficient, generator,
                )
        if self.use_local:
            if p.loss == "infonce":
                parts["local"] = info_nce_loss(e["image_local"], e["image_weighted"], p.temperature) + info_nce_loss(
                    e["text_local"], e["text_weighted"], p.temperature
                )
            else:
                parts["local"] = local_triplet_loss(
                    e["image_local"], e["image_weighted"], e["text_local"], e["text_weighted"], p.margin, k, generator
                )
        terms = list(parts.values())
        parts["total"] = self.weighting(terms) if self.weighting is not None else torch.stack(terms).sum()
        return parts
