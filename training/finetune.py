"""Fine-tuning the classifier with patient-level k-fold CV (``radpair train finetune``).

Initialisation: ``random``, a checkpoint file (MedicalNet format or an ``image_encoder.pt``), or a
pre-training run directory (its ``image_encoder.pt``). Cross-entropy, AdamW, linear warm-up then
StepLR, as in the paper. Every fold is evaluated on its held-out patients and, if given, on an
external cohort; metrics are mean ± std over folds. The run directory holds what the Triton
exporter needs (contract 4): ``classifier.pt`` (the fold model with the best internal AUC),
``model_config.json``, ``preprocess.json``, ``metrics.json``, ``class_names.json``; plus
``config.json``, ``loss_curve.png``, ``roc.png`` and ``attention_overlays.png``.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from monai.data import DataLoader
from torch.utils.data import Subset
from tqdm import tqdm

from radpair.training.config import TrainConfig
from radpair.core.task import TaskDefinition
from radpair.training.data import PairedStudy, augment, patient_folds, volume_dataset
from radpair.training.evaluate import Predictions, confusion, predict, roc_curves, scores, summarise
from radpair.training.models import Classifier, build_classifier, load_image_checkpoint
from radpair.training.plots import plot_losses, plot_overlays, plot_roc
from radpair.training.runtime import autocast, seed_everything, step_generator, write_json

log = logging.getLogger(__name__)


def resolve_init(init: str) -> Path | None:
    """``random`` -> None; a run directory -> its ``image_encoder.pt``; else a checkpoint file."""
    if init == "random":
        return None
    path = Path(init)
    if path.is_dir():
        path = path / "image_encoder.pt"
    if not path.is_file():
        raise FileNotFoundError(f"initialisation {init!r}: {path} does not exist")
    return path


def _scheduler(optimiser: torch.optim.Optimizer, config: TrainConfig) -> torch.optim.lr_scheduler.LRScheduler:
    f = config.finetune
    warmup = max(f.warmup_epochs, 0)

    def factor(epoch: int) -> float:
        ramp = min(1.0, (epoch + 1) / warmup) if warmup else 1.0
        return ramp * f.gamma ** (epoch // f.step_size)

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def train_fold(config: TrainConfig, num_classes: int, dataset, train_idx: Sequence[int], init: Path | None,
               device: torch.device, fold: int) -> tuple[Classifier, list[float], float]:
    """One fold's classifier; returns (model, per-epoch loss, seconds per epoch)."""
    f = config.finetune
    seed_everything(config.seed + fold)
    model = build_classifier(config.image.model_config(num_classes))
    if init is not None:
        load_image_checkpoint(model.encoder, init)
    model.to(device)
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=f.lr, weight_decay=f.weight_decay)
    scheduler = _scheduler(optimiser, config)
    loader = DataLoader(Subset(dataset, list(train_idx)), batch_size=min(f.batch_size, len(train_idx)), shuffle=True,
                        drop_last=len(train_idx) > f.batch_size, generator=torch.Generator().manual_seed(config.seed + fold),
                        num_workers=config.data.num_workers,
                        persistent_workers=config.data.num_workers > 0)
    losses, began = [], time.perf_counter()
    for epoch in range(f.epochs):
        model.train()
        gen = step_generator(config.seed, 3, fold, epoch)
        total, n = 0.0, 0
        for batch in tqdm(loader, desc=f"fold {fold + 1} epoch {epoch + 1}/{f.epochs}", unit="batch", leave=False):
            x = batch["image"].as_subclass(torch.Tensor).to(device)
            x = augment(x, gen) if config.data.augment else x
            y = torch.as_tensor(batch["label"], device=device)
            with autocast(device):
                logits, _, _ = model.forward_logits(x)
            loss = F.cross_entropy(logits.float(), y)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(y)
            n += len(y)
        scheduler.step()
        losses.append(total / max(n, 1))
    return model, losses, (time.perf_counter() - began) / max(f.epochs, 1)


def finetune(config: TrainConfig, task: TaskDefinition, studies: Sequence[PairedStudy], out: Path,
             init: str = "random", external: Sequence[PairedStudy] = (), device: str = "") -> dict:
    """k-fold fine-tuning on the labelled ``studies`` for the task's classes; writes the run
    directory ``out``; returns metrics."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    f = config.finetune
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = task.input.preprocess
    classes = list(task.class_names)
    init_path = resolve_init(init)
    labelled = [s for s in studies if s.label_index >= 0]
    missing = [classes[k] for k in range(len(classes)) if not any(s.label_index == k for s in labelled)]
    if missing:
        raise ValueError(f"fine-tuning needs labelled studies of every class; none of {', '.join(missing)}")
    write_json(out / "config.json", {**config.to_dict(), "init": init})
    with_masks = all(s.mask_path is not None for s in labelled)
    dataset = volume_dataset(labelled, params, with_masks=with_masks, cache_dir=config.data.cache_dir)
    ext = [s for s in external if s.label_index >= 0]
    ext_data = volume_dataset(ext, params, with_masks=all(s.mask_path for s in ext), cache_dir=config.data.cache_dir) if ext else None
    names = [s.study_uid[-12:] for s in labelled]
    thr = f.attention_threshold

    internal, external_scores, curves, rocs, ext_rocs = [], [], {}, {}, {}
    overlays: list = []
    pooled = Predictions()
    best: tuple[float, int, dict] | None = None
    epoch_seconds = []
    for fold, (train_idx, test_idx) in enumerate(patient_folds(labelled, f.folds, config.seed)):
        model, losses, seconds = train_fold(config, len(classes), dataset, train_idx, init_path, dev, fold)
        epoch_seconds.append(seconds)
        curves[f"fold {fold + 1}"] = losses
        pred = predict(model, dataset, test_idx, dev, f.batch_size, thr, overlays=2 if fold == 0 else 0, names=names)
        overlays += pred.overlays
        internal.append(scores(pred, classes))
        pooled.labels += pred.labels
        pooled.probabilities += pred.probabilities
        rocs.update(roc_curves(pred.labels, pred.probabilities, classes, f"fold {fold + 1}"))
        if ext_data is not None:
            ext_pred: Predictions = predict(model, ext_data, list(range(len(ext))), dev, f.batch_size, thr)
            external_scores.append(scores(ext_pred, classes))
            ext_rocs.update(roc_curves(ext_pred.labels, ext_pred.probabilities, classes, f"fold {fold + 1}"))
        auc = internal[-1]["auc"]
        key = -1.0 if math.isnan(auc) else auc
        if best is None or key > best[0]:
            best = (key, fold, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        log.info("fold %d/%d: internal AUC %.3f F1 %.3f Dice2D %.3f Dice3D %.3f", fold + 1, f.folds, auc,
                 internal[-1]["f1"], internal[-1]["dice_2d"], internal[-1]["dice_3d"])

    assert best is not None
    torch.save(best[2], out / "classifier.pt")
    write_json(out / "model_config.json", config.image.model_config(len(classes)))
    (out / "preprocess.json").write_text(params.to_json())
    write_json(out / "class_names.json", classes)
    metrics = {
        "init": init,
        "task": task.name,
        "class_names": classes,
        "selected_fold": best[1] + 1,
        "internal": summarise(internal),
        "internal_confusion": confusion(pooled.labels, pooled.probabilities, len(classes)),
        "external": summarise(external_scores) if external_scores else None,
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "device": str(dev),
        "data": {"labelled": len(labelled), "external": len(ext),
                 "studies": sorted(s.study_uid for s in labelled)},
    }
    write_json(out / "metrics.json", metrics)
    plot_losses(curves, out / "loss_curve.png")
    plot_roc(rocs, out / "roc.png")
    if ext_rocs:
        plot_roc(ext_rocs, out / "roc_external.png")
    if overlays:
        plot_overlays(overlays, out / "attention_overlays.png")
    return metrics
