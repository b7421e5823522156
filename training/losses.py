"""Pre-training losses: the paper's location-weighted global triplet loss, a location-weighted
InfoNCE, a GLoRIA-style word–region loss, and SimSiam for the image-only baseline.

Negatives are in-batch. The triplet loss picks them by *semi-hard sampling*: for each anchor, ``k``
random non-matching candidates are drawn and the one closest to the anchor is kept (``k=2`` is the
paper's choice; ``k >= batch-1`` is hard-negative mining), from an explicit ``torch.Generator`` so
that every rank of a distributed run picks the same negatives. *Location weighting*: a negative
that shares the anchor's location is pushed away with ``location_coefficient`` of the force, so
same-location mismatches end up closer than mismatches from another location.
"""

from __future__ import annotations

import math

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
    """Per-anchor terms ``w * max(0, d(a, p) - d(a, n) + margin)`` for anchors on the rows, ``w`` the
    location coefficient when the negative shares the anchor's location, else 1."""
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


def weighted_info_nce(scores: torch.Tensor, locations: torch.Tensor | None = None,
                      location_coefficient: float = 1.0) -> torch.Tensor:
    """Symmetric InfoNCE over a pair-score matrix (``scores[i, j]``: image i with report j, logits).

    With ``locations``, a negative sharing the anchor's location counts ``location_coefficient``
    times in the denominator (its exponential is scaled), so it is pushed away with less force.
    """
    n = scores.shape[0]
    log_weights = torch.zeros_like(scores)
    if locations is not None and location_coefficient != 1.0:
        same = (locations[:, None] == locations[None, :]) & ~torch.eye(n, dtype=torch.bool, device=scores.device)
        log_weights = torch.where(same, torch.full_like(scores, math.log(location_coefficient)), log_weights)
    target = torch.arange(n, device=scores.device)
    rows = -scores[target, target] + torch.logsumexp(scores + log_weights, dim=1)
    columns = -scores[target, target] + torch.logsumexp(scores.T + log_weights.T, dim=1)
    return 0.5 * (rows.mean() + columns.mean())


def info_nce_loss(image: torch.Tensor, text: torch.Tensor, temperature: float = 0.07,
                  locations: torch.Tensor | None = None, location_coefficient: float = 1.0) -> torch.Tensor:
    """CLIP-style InfoNCE on cosine similarities (the paper's "contrastive loss"), optionally location-weighted."""
    scores = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T / temperature
    return weighted_info_nce(scores, locations, location_coefficient)


def word_region_scores(words: torch.Tensor, word_mask: torch.Tensor, regions: torch.Tensor,
                       attention_temperature: float = 4.0, aggregation_temperature: float = 5.0) -> torch.Tensor:
    """GLoRIA's pair scores ``S[i, j]`` of image i (``regions`` [B, R, d]) and report j (``words``
    [B, W, d], ``word_mask`` [B, W]).

    Each word of report j attends over the regions of image i (softmax of ``attention_temperature``
    × cosine); its score is the cosine between the word and what it attended to; a pair's score is
    the log-sum-exp of its words' scores (``aggregation_temperature``), so the words that match a
    region best decide it.
    """
    w = F.normalize(words, dim=-1)
    r = F.normalize(regions, dim=-1)
    similarity = torch.einsum("jwd,ird->ijwr", w, r)
    attention = torch.softmax(attention_temperature * similarity, dim=-1)
    context = F.normalize(torch.einsum("ijwr,ird->ijwd", attention, r), dim=-1)
    word_scores = (context * w.unsqueeze(0)).sum(-1)
    masked = torch.where(word_mask.unsqueeze(0), aggregation_temperature * word_scores,
                         torch.full_like(word_scores, -1e4))
    return torch.logsumexp(masked, dim=-1) / aggregation_temperature


def word_region_loss(words: torch.Tensor, word_mask: torch.Tensor, regions: torch.Tensor,
                     locations: torch.Tensor | None = None, location_coefficient: float = 1.0,
                     temperature: float = 0.1) -> torch.Tensor:
    """The local loss: location-weighted InfoNCE, both directions, on the word–region pair scores."""
    scores = word_region_scores(words, word_mask, regions) / temperature
    return weighted_info_nce(scores, locations, location_coefficient)


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam: each view's prediction matches the other view's projection, which gets no gradient
    (the stop-gradient is what keeps a siamese network without negatives from collapsing)."""
    return -0.5 * (F.cosine_similarity(p1, z2.detach(), dim=-1).mean() + F.cosine_similarity(p2, z1.detach(), dim=-1).mean())


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
