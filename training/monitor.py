"""Is a representation collapsing? Per-epoch statistics of the embeddings, and a loud warning.

A collapsed contrastive model maps every study to (nearly) the same direction: the mean pairwise
cosine of its L2-normalised embeddings goes to 1 and their spread per dimension to 0. A healthy
one keeps the spread near that of random directions, ``1 / sqrt(dim)``; ``spread`` below is the
per-dimension standard deviation in units of that (1: like random directions, 0: collapsed).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

COLLAPSED_COSINE = 0.9
COLLAPSED_SPREAD = 0.2


def embedding_stats(embeddings: torch.Tensor) -> dict[str, float]:
    """``mean_cosine`` (off-diagonal) and ``spread`` of a batch of embeddings ``[N, dim]``."""
    z = F.normalize(embeddings.detach().float(), dim=1)
    n, dim = z.shape
    if n < 2:
        return {"mean_cosine": float("nan"), "spread": float("nan")}
    cosine = (z @ z.T).sum().sub(n).div(n * (n - 1))
    spread = z.std(dim=0).mean() * dim ** 0.5
    return {"mean_cosine": float(cosine), "spread": float(spread)}


def collapsed(stats: dict[str, float]) -> bool:
    """Whether ``stats`` (from :func:`embedding_stats`) read as a collapsed representation."""
    return stats["mean_cosine"] > COLLAPSED_COSINE or stats["spread"] < COLLAPSED_SPREAD


def warn_if_collapsed(name: str, stats: dict[str, float], epoch: int) -> bool:
    """Log a WARNING when ``stats`` look collapsed; returns whether they do."""
    if collapsed(stats):
        log.warning("COLLAPSE: %s embeddings at epoch %d have mean pairwise cosine %.3f and spread %.3f "
                    "(healthy: cosine well below %.1f, spread near 1): the representation is degenerating",
                    name, epoch, stats["mean_cosine"], stats["spread"], COLLAPSED_COSINE)
        return True
    return False


def summarise(history: list[dict]) -> None:
    """One line at the end of a run on what the monitor saw over it. Early epochs of a healthy run
    often read collapsed in eval mode (epochs 1-9 of the shipped configuration's 20), so a
    reader of the per-epoch warnings needs to know whether the representation recovered."""
    flagged = [h["epoch"] for h in history if h.get("collapsed")]
    if not flagged:
        return
    if history[-1].get("collapsed"):
        log.warning("COLLAPSE at the end of the run: the last epoch's embeddings are collapsed (flagged in "
                    "%d of %d epochs); fine-tuning from this encoder will be no better than from random",
                    len(flagged), len(history))
    else:
        log.info("collapse monitor: %d early epoch(s) read collapsed (last: epoch %d); the representation "
                 "recovered and the last %d epoch(s) are healthy", len(flagged), flagged[-1],
                 history[-1]["epoch"] - flagged[-1])
