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

import torch
from tqdm import tqdm

from radpair.core.model_card import OperatingPoints
from radpair.core.preprocess import PreprocessParams
from radpair.training.data import PairedStudy, volume_dataset
from radpair.training.evaluate import Predictions, scores


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, Any]
    # Sanity problems of the artifact's outputs (empty: fine).
    problems: list[str]


def evaluate_artifact(model_pt: Path, params: PreprocessParams, class_names: Sequence[str],
                      studies: Sequence[PairedStudy], operating: OperatingPoints, batch_size: int = 4) -> Evaluation:
    """Held-out metrics of an exported TorchScript model — the exact artifact Triton would serve.

    Scored with training's own code (:func:`radpair.training.evaluate.scores`) at the operating
    points the candidate chose on its internal folds: class AUC/F1/accuracy, lesion AUC,
    sensitivity and specificity. Overlay Dice needs ground-truth lesion masks, which an archive
    does not have (studies from a PACS come without them), so it is ``null`` with the reason.
    Sanity: probabilities finite, in [0, 1] and summing to 1; lesion probability and attention
    finite and in [0, 1]; embeddings finite.
    """
    model = torch.jit.load(str(model_pt), map_location="cpu").eval()
    data = volume_dataset(studies, params, cache=False)
    pred, problems = Predictions(), []
    with torch.no_grad():
        for start in tqdm(range(0, len(studies), batch_size), desc="held-out", unit="batch", leave=False):
            items = [data[i] for i in range(start, min(start + batch_size, len(studies)))]
            x = torch.stack([torch.as_tensor(item["image"]) for item in items]).float()
            probs, lesion, attention, embedding = model(x)
            problems += _sanity(probs, lesion, attention, embedding)
            pred.labels += [int(item["label"]) for item in items]
            pred.lesion_truth += [int(item["lesion"]) for item in items]
            pred.probabilities += probs.tolist()
            pred.lesion_probability += lesion[:, 0].tolist()
    metrics: dict[str, Any] = {"n": len(pred.labels), "dice_note": "no ground-truth lesion masks in the archive"}
    if problems:  # the sanity problems say why; there is nothing to score
        return Evaluation({**metrics, "auc": None, "f1": None, "accuracy": None}, sorted(set(problems)))
    scored = scores(pred, class_names, operating)
    metrics.update({k: None if isinstance(v, float) and math.isnan(v) else v for k, v in scored.items()})
    return Evaluation(metrics, [])


def _sanity(probs: torch.Tensor, lesion: torch.Tensor, attention: torch.Tensor, embedding: torch.Tensor) -> list[str]:
    problems = []
    if not torch.isfinite(probs).all():
        problems.append("probabilities are not finite")
    elif probs.min() < 0 or probs.max() > 1 or not torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-4):
        problems.append("probabilities are outside [0, 1] or do not sum to 1")
    if not torch.isfinite(lesion).all() or lesion.min() < 0 or lesion.max() > 1:
        problems.append("lesion probability is not finite or outside [0, 1]")
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
