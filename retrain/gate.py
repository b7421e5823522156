"""Judging a candidate: held-out metrics of the exported artifact, sanity checks, the gate.

Every candidate, and the version serving at the time, is scored on the same fixed held-out
studies with training's own metric code, from the TorchScript artifact Triton would load.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from radpair.core.preprocess import PreprocessParams
from radpair.training.data import PairedStudy, volume_dataset
from radpair.training.evaluate import classification_metrics


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    # Sanity problems of the artifact's outputs (empty: fine).
    problems: list[str]


def evaluate_artifact(model_pt: Path, params: PreprocessParams, class_names: Sequence[str],
                      studies: Sequence[PairedStudy], batch_size: int = 4) -> Evaluation:
    """Held-out metrics of an exported TorchScript model — the exact artifact Triton would serve.

    Scored with training's own metrics (macro one-vs-rest AUC; macro precision, recall, F1 of the
    argmax; accuracy). Attention Dice needs ground-truth lesion masks, which an archive does not
    have (studies from a PACS come without them), so it is reported as ``null`` with the reason.
    Sanity: probabilities finite, in [0, 1] and summing to 1; attention finite and in [0, 1];
    embeddings finite.
    """
    model = torch.jit.load(str(model_pt), map_location="cpu").eval()
    data = volume_dataset(studies, params, cache=False)
    probabilities, labels, problems = [], [], []
    with torch.no_grad():
        for start in tqdm(range(0, len(studies), batch_size), desc="held-out", unit="batch", leave=False):
            items = [data[i] for i in range(start, min(start + batch_size, len(studies)))]
            x = torch.stack([torch.as_tensor(item["image"]) for item in items]).float()
            probs, attention, embedding = model(x)
            problems += _sanity(probs, attention, embedding)
            probabilities.append(probs.numpy())
            labels += [int(item["label"]) for item in items]
    p = np.concatenate(probabilities)
    y = np.asarray(labels)
    metrics: dict[str, Any] = {"n": int(len(y)), "attention_dice": None,
                               "attention_dice_note": "no ground-truth lesion masks in the archive"}
    if not np.isfinite(p).all():  # the sanity problems say why; there is nothing to score
        return Evaluation({**metrics, "auc": None, "f1": None, "accuracy": None}, sorted(set(problems)))
    scored = classification_metrics(y.tolist(), p.tolist(), class_names)
    metrics.update({k: None if math.isnan(v) else v for k, v in scored.items()})
    return Evaluation(metrics, sorted(set(problems)))


def _sanity(probs: torch.Tensor, attention: torch.Tensor, embedding: torch.Tensor) -> list[str]:
    problems = []
    if not torch.isfinite(probs).all():
        problems.append("probabilities are not finite")
    elif probs.min() < 0 or probs.max() > 1 or not torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-4):
        problems.append("probabilities are outside [0, 1] or do not sum to 1")
    if not torch.isfinite(attention).all() or attention.min() < 0 or attention.max() > 1:
        problems.append("attention is not finite or outside [0, 1]")
    if not torch.isfinite(embedding).all():
        problems.append("embeddings are not finite")
    return problems


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def gate(candidate: Evaluation, serving: Mapping[str, Any] | None, primary_metric: str, tolerance: float) -> GateDecision:
    """Promote when sane and ``candidate >= serving - tolerance`` on the primary metric."""
    if candidate.problems:
        return GateDecision(False, "sanity check failed: " + "; ".join(candidate.problems))
    value = candidate.metrics.get(primary_metric)
    if value is None or math.isnan(value):
        return GateDecision(False, f"{primary_metric} is undefined on the held-out set")
    reference = None if serving is None else serving.get(primary_metric)
    if reference is None:
        return GateDecision(True, f"{primary_metric} {value:.3f}; no serving version to compare with")
    verdict = value >= reference - tolerance
    return GateDecision(verdict, f"{primary_metric} {value:.3f} {'>=' if verdict else '<'} serving "
                                 f"{reference:.3f} - tolerance {tolerance:g}")
