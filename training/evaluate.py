"""Evaluation of a classifier: AUC / precision / recall / F1 and attention Dice (``radpair evaluate``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score
from torch import nn
from tqdm import tqdm

from radpair.training.data import PairedStudy, volume_dataset
from radpair.training.explain import attention_dice, largest_lesion_slice
from radpair.training.plots import plot_overlays, plot_roc
from radpair.training.runtime import autocast, write_json


@dataclass
class Predictions:
    labels: list[int] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)
    dice_2d: list[float] = field(default_factory=list)
    dice_3d: list[float] = field(default_factory=list)
    # (title, image slice, mask slice, attention slice) on the largest-lesion slice.
    overlays: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


@torch.no_grad()
def predict(model: nn.Module, dataset, indices: Sequence[int], device: torch.device, batch_size: int,
            threshold: float, overlays: int = 0, names: Sequence[str] = ()) -> Predictions:
    """Run ``model`` over ``dataset[indices]``; Dice only for items with a non-empty ``mask``."""
    model.eval()
    out = Predictions()
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start:start + batch_size]]
        x = torch.stack([torch.as_tensor(item["image"]) for item in items]).to(device)
        with autocast(device):
            probabilities, attention, _ = model(x)
        probabilities, attention = probabilities.float().cpu(), attention.float().cpu()
        for item, p, a in zip(items, probabilities, attention):
            out.labels.append(int(item["label"]))
            out.probabilities.append(p.tolist())
            mask = torch.as_tensor(item["mask"])[0] if "mask" in item else None
            if mask is not None and bool(mask.any()):
                d2, d3 = attention_dice(a, mask, threshold)
                out.dice_2d.append(d2)
                out.dice_3d.append(d3)
                if len(out.overlays) < overlays:
                    k = largest_lesion_slice(mask)
                    title = names[int(item["index"])] if names else str(int(item["index"]))
                    out.overlays.append((title, np.asarray(item["image"])[0][..., k], mask[..., k].numpy(), a[..., k].numpy()))
    return out


def classification_metrics(labels: Sequence[int], probabilities: Sequence[Sequence[float]],
                           class_names: Sequence[str]) -> dict[str, float]:
    """K-class scores: one-vs-rest AUC per class and their macro mean (``auc``; for two classes it
    is the AUC of the class-1 probability), precision/recall/F1 of the argmax per class and macro,
    and accuracy. A class absent from ``labels`` has no AUC (NaN) and is left out of the mean."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float).reshape(len(y), len(class_names))
    per_class_auc = []
    for k in range(len(class_names)):
        positive = y == k
        per_class_auc.append(float(roc_auc_score(positive, p[:, k])) if 0 < positive.sum() < len(y) else math.nan)
    finite = [a for a in per_class_auc if not math.isnan(a)]
    predicted = p.argmax(1)
    precision, recall, f1, _ = precision_recall_fscore_support(y, predicted, labels=list(range(len(class_names))),
                                                               average=None, zero_division=0)
    result = {"auc": float(np.mean(finite)) if finite else math.nan,
              "precision": float(np.mean(precision)), "recall": float(np.mean(recall)), "f1": float(np.mean(f1)),
              "accuracy": float((predicted == y).mean()) if len(y) else math.nan}
    for k, name in enumerate(class_names):
        result[f"auc[{name}]"] = per_class_auc[k]
        result[f"f1[{name}]"] = float(f1[k])
    return result


def confusion(labels: Sequence[int], probabilities: Sequence[Sequence[float]], n_classes: int) -> list[list[int]]:
    """Counts ``[true class][predicted class]`` of the argmax."""
    return confusion_matrix(labels, np.asarray(probabilities).argmax(1), labels=list(range(n_classes))).tolist()


def roc_curves(labels: Sequence[int], probabilities: Sequence[Sequence[float]], class_names: Sequence[str],
               name: str) -> dict[str, tuple[list[int], list[float]]]:
    """ROC inputs for :func:`plot_roc`: the class-1 curve for two classes, one-vs-rest per class otherwise."""
    p = np.asarray(probabilities)
    classes = [1] if len(class_names) == 2 else range(len(class_names))
    return {name if len(class_names) == 2 else f"{name} {class_names[k]}":
            ([int(v == k) for v in labels], p[:, k].tolist()) for k in classes}


def scores(pred: Predictions, class_names: Sequence[str]) -> dict[str, float]:
    result = classification_metrics(pred.labels, pred.probabilities, class_names)
    result["dice_2d"] = float(np.mean(pred.dice_2d)) if pred.dice_2d else math.nan
    result["dice_3d"] = float(np.mean(pred.dice_3d)) if pred.dice_3d else math.nan
    result["n"] = len(pred.labels)
    return result


def summarise(per_fold: Sequence[dict[str, float]]) -> dict[str, dict]:
    """Mean ± std over folds (NaN folds, e.g. AUC on a one-class fold, are left out of the mean)."""
    summary = {}
    for key in per_fold[0]:
        values = [float(f[key]) for f in per_fold]
        finite = [v for v in values if not math.isnan(v)]
        summary[key] = {"mean": float(np.mean(finite)) if finite else None,
                        "std": float(np.std(finite)) if finite else None,
                        "folds": [None if math.isnan(v) else v for v in values]}
    return summary


def evaluate_run(run_dir: Path, studies: Sequence[PairedStudy], out: Path, threshold: float = 0.5,
                 device: str = "", batch_size: int = 8) -> dict:
    """Evaluate a fine-tuning run's classifier on labelled ``studies``; writes ``out``/evaluation.json."""
    from radpair.training.export import load_run

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, params, class_names, _ = load_run(Path(run_dir))
    model.to(dev)
    labelled = [s for s in studies if s.label_index >= 0]
    if not labelled:
        raise ValueError("no labelled studies to evaluate")
    with_masks = all(s.mask_path is not None for s in labelled)
    data = volume_dataset(labelled, params, with_masks=with_masks, cache=False)
    indices = list(range(len(labelled)))
    pred = Predictions()
    for start in tqdm(range(0, len(indices), batch_size), desc="evaluate", unit="batch"):
        part = predict(model, data, indices[start:start + batch_size], dev, batch_size, threshold,
                       overlays=max(0, 4 - len(pred.overlays)), names=[s.study_uid[-12:] for s in labelled])
        for name in ("labels", "probabilities", "dice_2d", "dice_3d", "overlays"):
            getattr(pred, name).extend(getattr(part, name))
    result = {"run": str(Path(run_dir).resolve()), "threshold": threshold, "class_names": class_names,
              **scores(pred, class_names),
              "confusion": confusion(pred.labels, pred.probabilities, len(class_names))}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluation.json", result)
    plot_roc(roc_curves(pred.labels, pred.probabilities, class_names, "evaluation"), out / "roc.png")
    if pred.overlays:
        plot_overlays(pred.overlays, out / "attention_overlays.png")
    return result
