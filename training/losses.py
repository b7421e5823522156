"""Contrastive losses of the paper: location-weighted triplet (global), local triplet, InfoNCE.

All take in-batch negatives. Negatives are chosen by *semi-hard sampling*: for each anchor, ``k``
random non-matching candidates are drawn and the one closest to the anchor is kept (``k=2`` is the
paper's choice; ``k >= batch-1`` is hard-negative mining). The sampling draws from an explicit
``torch.Generator`` so that every rank of a distributed run picks the same negatives.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cosine_distance_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``D[i, j] = 1 - cos(a_i, b_j)``."""
    return 1.0 - F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T


def semi_hard_negatives(distances: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index of the negative for each anchor row: the closest of ``k`` random non-matching columns."""
    n = distances.shape[0]
    if n < 2:
        raise ValueError("in-batch negatives need a batch of at least 2")
    k = max(1, min(k, n - 1))
    scores = torch.rand(n, n, generator=generator).to(distances.device)
    scores.fill_diagonal_(float("inf"))  # the matching pair is never a negative
    candidates = scores.topk(k, dim=1, largest=False).indices
    closest = distances.detach().gather(1, candidates).argmin(dim=1, keepdim=True)
    return candidates.gather(1, closest).squeeze(1)


def triplet_terms(
    distances: torch.Tensor,
    margin: float,
    k: int,
    generator: torch.Generator | None = None,
    locations: torch.Tensor | None = None,
    location_coefficient: float = 1.0,
) -> torch.Tensor:
    """Per-anchor triplet terms ``w * max(0, d(a, p) - d(a, n) + margin)`` for anchors on the rows.

    ``w`` is ``location_coefficient`` when the negative has the anchor's location and 1 otherwise:
    same-location mismatches are pushed apart with less force, so they end up closer in the
    embedding than mismatches from another location (the paper's location weighting).
    """
    negatives = semi_hard_negatives(distances, k, generator)
    positive = distances.diagonal()
    negative = distances.gather(1, negatives.unsqueeze(1)).squeeze(1)
    terms = F.relu(positive - negative + margin)
    if locations is not None:
        same = locations == locations[negatives]
        terms = terms * torch.where(same, torch.full_like(terms, location_coefficient), torch.ones_like(terms))
    return terms


def global_triplet_loss(
    image: torch.Tensor,
    text: torch.Tensor,
    margin: float = 0.25,
    k: int = 2,
    locations: torch.Tensor | None = None,
    location_coefficient: float = 0.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Image-anchor plus report-anchor location-weighted triplet loss (paper eq. 1)."""
    d = cosine_distance_matrix(image, text)
    image_anchor = triplet_terms(d, margin, k, generator, locations, location_coefficient)
    text_anchor = triplet_terms(d.T, margin, k, generator, locations, location_coefficient)
    return image_anchor.mean() + text_anchor.mean()


def local_triplet_loss(
    image_local: torch.Tensor,
    image_weighted: torch.Tensor,
    text_local: torch.Tensor,
    text_weighted: torch.Tensor,
    margin: float = 0.25,
    k: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Paper eq. 2: for each modality, triplets between the original local representation and its
    cross-attended (other-modality weighted) counterpart, with original and weighted anchors."""
    total = image_local.new_zeros(())
    for original, weighted in ((image_local, image_weighted), (text_local, text_weighted)):
        d = cosine_distance_matrix(original, weighted)
        total = total + triplet_terms(d, margin, k, generator).mean() + triplet_terms(d.T, margin, k, generator).mean()
    return total


def info_nce_loss(image: torch.Tensor, text: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric CLIP/InfoNCE loss over all in-batch negatives (the paper's "contrastive loss")."""
    logits = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class LearnedWeighting(nn.Module):
    """Total = sum_i exp(-s_i) * L_i + s_i with trainable log-variances ``s_i`` (paper eq. 3).

    The ``+ s_i`` regulariser keeps the learned weights from collapsing to zero, which a plain
    trainable linear combination of non-negative losses would do.
    """

    def __init__(self, n_terms: int) -> None:
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n_terms))

    def forward(self, losses: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(losses)
        return (torch.exp(-self.log_vars) * stacked + self.log_vars).sum()
