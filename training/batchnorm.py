"""Batch normalisation over the global batch: every rank's samples, on any process group.

``SyncBatchNorm`` does this on GPUs only; these work on gloo (CPU) too, so a two-process run
matches one process on the same global batch. The statistics are all-reduced moments (sum, sum of
squares, count) with gradients flowing back to each rank's own samples.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GlobalStatistics:
    """Mixin for a ``nn.BatchNorm*d``: training statistics of the global batch when distributed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not _distributed():
            return super().forward(x)  # type: ignore[misc]
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        moments = dist_fn.all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        channels = x.shape[1]
        n = moments[-1]
        mean = moments[:channels] / n
        var = (moments[channels:2 * channels] / n - mean * mean).clamp_min(0.0)
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var * n / (n - 1).clamp_min(1.0))
            self.num_batches_tracked.add_(1)
        shape = [1, channels] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out


class GlobalBatchNorm1d(_GlobalStatistics, nn.BatchNorm1d):
    """For the projection heads: batch statistics over every rank's rows."""


class GlobalBatchNorm3d(_GlobalStatistics, nn.BatchNorm3d):
    """For 3D feature maps: batch statistics over every rank's volumes."""
