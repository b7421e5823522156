"""Evaluation of a classifier (``radpair evaluate``): is there a lesion, which class, where.

Scores, each on the studies it applies to:

* **class** (studies with a lesion and a class label): one-vs-rest AUC per class and their macro
  mean (``auc``; for two classes the AUC of the class-1 probability), macro precision, recall, F1
  of the argmax, accuracy, confusion matrix;
* **lesion** (studies whose presence is known): AUC of the lesion probability, and sensitivity and
  specificity at the operating threshold;
* **overlay** (lesion studies with a ground-truth mask): 2D and 3D Dice of the overlay at the
  operating attention threshold, and at the oracle threshold of the scored set.

The operating points are chosen on internal folds (:func:`choose_operating_points`) and travel with
the model (``metrics.json``, the model card); a scored set never chooses its own.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.metrics import (
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)
from torch import nn
from tqdm import tqdm

from radpair.core.model_card import OperatingPoints
from radpair.core.preprocess import PreprocessParams, brain_mask, overlay_map
from radpair.training.data import PairedStudy, volume_dataset
from radpair.training.explain import (
    best_threshold,
    dice_curve,
    largest_lesion_slice,
    overlay_dice,
)
from radpair.training.plots import plot_overlays, plot_roc
from radpair.training.runtime import autocast, write_json


@dataclass
class Predictions:
    names: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # class index; -1 none or unknown
    lesion_truth: list[int] = field(default_factory=list)  # 1 lesion, 0 none, -1 unknown
    probabilities: list[list[float]] = field(default_factory=list)
    lesion_probability: list[float] = field(default_factory=list)
    # (overlay, mask) of the lesion studies with a mask, on the preprocessed grid.
    overlays: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    # (title, image slice, mask slice, overlay slice) on the largest-lesion slice, for pictures.
    pictures: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)

    def extend(self, other: "Predictions") -> None:
        for name in ("names", "labels", "lesion_truth", "probabilities", "lesion_probability", "overlays", "pictures"):
            getattr(self, name).extend(getattr(other, name))


@torch.no_grad()
def predict(model: nn.Module, dataset, indices: Sequence[int], device: torch.device, batch_size: int,
            params: PreprocessParams, pictures: int = 0, names: Sequence[str] = (), overlay: str = "attention") -> Predictions:
    """Run ``model`` (a classifier or its TorchScript export) over ``dataset[indices]``; the
    overlays are made by the rule ``overlay`` (:data:`radpair.core.preprocess.OVERLAY_RULES`)."""
    model.eval()
    out = Predictions()
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start:start + batch_size]]
        x = torch.stack([torch.as_tensor(item["image"]) for item in items]).to(device)
        with autocast(device):
            probabilities, lesion, attention, _ = model(x)
        probabilities, lesion, attention = probabilities.float().cpu(), lesion.float().cpu(), attention.float().cpu()
        for item, p, q, a in zip(items, probabilities, lesion, attention):
            name = names[int(item["index"])] if names else str(int(item["index"]))
            out.names.append(name)
            out.labels.append(int(item["label"]))
            out.lesion_truth.append(int(item["lesion"]))
            out.probabilities.append(p.tolist())
            out.lesion_probability.append(float(q[0]))
            if "mask" not in item or not bool(torch.as_tensor(item["mask"]).any()):
                continue
            image = np.asarray(item["image"])[0]
            mask = np.asarray(item["mask"])[0] > 0.5
            shown = overlay_map(a.numpy(), brain_mask(image, params.spacing), image, overlay).astype(np.float16)
            out.overlays.append((shown, mask))
            if len(out.pictures) < pictures:
                k = largest_lesion_slice(mask)
                out.pictures.append((name, image[..., k], mask[..., k], shown[..., k].astype(np.float32)))
    return out


def choose_operating_points(pred: Predictions, overlay: str = "attention") -> OperatingPoints:
    """Youden's J on the lesion probabilities, the best mean 2D Dice on the overlays (made by the
    rule ``overlay``, which the operating points record)."""
    truth = np.asarray(pred.lesion_truth)
    known = truth >= 0
    lesion = 0.5
    if known.any() and len(set(truth[known].tolist())) == 2:
        fpr, tpr, thresholds = roc_curve(truth[known], np.asarray(pred.lesion_probability)[known])
        lesion = float(np.clip(thresholds[int(np.argmax(tpr - fpr))], 0.0, 1.0))
    return OperatingPoints(round(lesion, 4), best_threshold(pred.overlays), overlay)


def classification_metrics(labels: Sequence[int], probabilities: Sequence[Sequence[float]],
                           class_names: Sequence[str]) -> dict[str, float]:
    """K-class scores: one-vs-rest AUC per class and their macro mean (``auc``), macro
    precision/recall/F1 of the argmax per class and overall, and accuracy. A class absent from
    ``labels`` has no AUC (NaN) and is left out of the mean."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float).reshape(len(y), len(class_names))
    per_class_auc = []
    for k in range(len(class_names)):
        positive = y == k
        per_class_auc.append(float(roc_auc_score(positive, p[:, k])) if 0 < positive.sum() < len(y) else math.nan)
    finite = [a for a in per_class_auc if not math.isnan(a)]
    predicted = p.argmax(1) if len(y) else np.zeros(0, dtype=int)
    precision, recall, f1, _ = precision_recall_fscore_support(y, predicted, labels=list(range(len(class_names))),
                                                               average=None, zero_division=0)
    result = {"auc": float(np.mean(finite)) if finite else math.nan,
              "precision": float(np.mean(precision)), "recall": float(np.mean(recall)), "f1": float(np.mean(f1)),
              "accuracy": float((predicted == y).mean()) if len(y) else math.nan}
    for k, name in enumerate(class_names):
        result[f"auc[{name}]"] = per_class_auc[k]
        result[f"f1[{name}]"] = float(f1[k])
    return result


def detection_metrics(truth: Sequence[int], probability: Sequence[float], threshold: float) -> dict[str, float]:
    """Lesion detection: AUC, and sensitivity / specificity of ``probability >= threshold``."""
    t = np.asarray(truth, dtype=int)
    q = np.asarray(probability, dtype=float)
    known = t >= 0
    t, q = t[known], q[known]
    found = q >= threshold
    positive, negative = t == 1, t == 0
    return {
        "lesion_auc": float(roc_auc_score(t, q)) if positive.any() and negative.any() else math.nan,
        "sensitivity": float(found[positive].mean()) if positive.any() else math.nan,
        "specificity": float((~found[negative]).mean()) if negative.any() else math.nan,
    }


def scores(pred: Predictions, class_names: Sequence[str], operating: OperatingPoints) -> dict[str, float]:
    """Every score of :mod:`this module <radpair.training.evaluate>` on ``pred``."""
    labelled = [i for i, y in enumerate(pred.labels) if y >= 0]
    result = classification_metrics([pred.labels[i] for i in labelled], [pred.probabilities[i] for i in labelled],
                                    class_names)
    result.update(detection_metrics(pred.lesion_truth, pred.lesion_probability, operating.lesion_threshold))
    if pred.overlays:
        chosen = [overlay_dice(o, m, operating.attention_threshold) for o, m in pred.overlays]
        curve = dice_curve(pred.overlays)
        best = int(np.nanargmax(curve[:, 0]))
        result.update(dice_2d=float(np.mean([c[0] for c in chosen])), dice_3d=float(np.mean([c[1] for c in chosen])),
                      dice_2d_oracle=float(curve[best, 0]), dice_3d_oracle=float(curve[best, 1]))
    else:
        result.update(dice_2d=math.nan, dice_3d=math.nan, dice_2d_oracle=math.nan, dice_3d_oracle=math.nan)
    result["n"] = len(pred.labels)
    return result


def confusion(labels: Sequence[int], probabilities: Sequence[Sequence[float]], n_classes: int) -> list[list[int]]:
    """Counts ``[true class][predicted class]`` of the argmax, over the labelled studies."""
    pairs = [(y, p) for y, p in zip(labels, probabilities) if y >= 0]
    if not pairs:
        return [[0] * n_classes for _ in range(n_classes)]
    return confusion_matrix([y for y, _ in pairs], np.asarray([p for _, p in pairs]).argmax(1),
                            labels=list(range(n_classes))).tolist()


def roc_curves(pred: Predictions, class_names: Sequence[str], name: str) -> dict[str, tuple[list[int], list[float]]]:
    """ROC inputs for :func:`plot_roc`: the lesion curve, and the class-1 curve for two classes or
    one-vs-rest per class otherwise."""
    labelled = [(y, p) for y, p in zip(pred.labels, pred.probabilities) if y >= 0]
    p = np.asarray([q for _, q in labelled]).reshape(-1, len(class_names))
    classes = [1] if len(class_names) == 2 else range(len(class_names))
    curves = {name if len(class_names) == 2 else f"{name} {class_names[k]}":
              ([int(y == k) for y, _ in labelled], p[:, k].tolist()) for k in classes}
    known = [(t, q) for t, q in zip(pred.lesion_truth, pred.lesion_probability) if t >= 0]
    curves[f"{name} lesion"] = ([t for t, _ in known], [q for _, q in known])
    return curves


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


def load_for_evaluation(path: Path) -> tuple[nn.Module, PreprocessParams, list[str], OperatingPoints, str]:
    """A fine-tuning run directory or an exported model version (its TorchScript, the exact
    artifact Triton serves): the model, its preprocessing, class names, operating points and what it is."""
    path = Path(path)
    if (path / "model.pt").is_file() and (path / "model_card.json").is_file():
        card = json.loads((path / "model_card.json").read_text())
        model = torch.jit.load(str(path / "model.pt"), map_location="cpu")
        params = PreprocessParams.from_json((path / "preprocess.json").read_text())
        operating = OperatingPoints.from_card(card)
        return model, params, list(card["class_names"]), operating, f"{card.get('name', '?')} version {card.get('version', '?')}"
    from radpair.training.export import load_run

    model, params, class_names, facts = load_run(path)
    return model, params, class_names, OperatingPoints.from_card(facts), f"run {path}"


def evaluate_run(path: Path, studies: Sequence[PairedStudy], out: Path, device: str = "", batch_size: int = 8) -> dict:
    """Score a fine-tuning run or an exported version on ``studies``; writes ``out``/evaluation.json and plots."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, params, class_names, operating, what = load_for_evaluation(Path(path))
    model.to(dev)
    known = [s for s in studies if s.label_index >= 0 or s.lesion >= 0]
    if not known:
        raise ValueError("no study with a label or a known lesion presence to evaluate")
    with_masks = all(s.mask_path is not None for s in known)
    data = volume_dataset(known, params, with_masks=with_masks, cache=False)
    pred = Predictions()
    names = [s.study_uid[-12:] for s in known]
    for start in tqdm(range(0, len(known), batch_size), desc="evaluate", unit="batch"):
        pred.extend(predict(model, data, list(range(start, min(start + batch_size, len(known)))), dev, batch_size,
                            params, pictures=max(0, 4 - len(pred.pictures)), names=names, overlay=operating.overlay))
    result = {"model": what, "class_names": class_names, "operating_points": asdict(operating),
              **scores(pred, class_names, operating), "confusion": confusion(pred.labels, pred.probabilities, len(class_names))}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "evaluation.json", result)
    plot_roc(roc_curves(pred, class_names, "evaluation"), out / "roc.png")
    if pred.pictures:
        plot_overlays(pred.pictures, out / "attention_overlays.png", operating.attention_threshold)
    return result
