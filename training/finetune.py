"""Fine-tuning the classifier with patient-level k-fold CV (``radpair train finetune``).

Initialisation: ``random``, a checkpoint file (MedicalNet format or an ``image_encoder.pt``), or a
pre-training run directory (its ``image_encoder.pt``). Two losses on the attended representation:
the lesion's presence (binary cross-entropy, every study whose presence is known, lesion-free ones
included) and its class (cross-entropy weighted by inverse class frequency, studies with a lesion
and a class label). With a few hundred labels (``finetune.few_labels``) the class loss trains the
heads and the region-of-interest branch but not the encoder, and what is trained from scratch
learns 3 times faster than the encoder; with fewer, the class loss trains the encoder too, all at
one rate (:func:`resolve_recipe`). AdamW, linear warm-up then cosine decay. Every fold is evaluated on its held-out
patients and, if given, on an external cohort; the operating points — the lesion threshold (Youden)
and the overlay's attention threshold (best mean 2D Dice) — are chosen on the pooled internal
out-of-fold predictions, never on the external cohort. The run directory holds what the Triton
exporter needs: ``classifier.pt`` (the ensemble of the fold models, or with ``finetune.ensemble =
false`` the fold model with the best internal AUC), ``model_config.json``, ``preprocess.json``,
``metrics.json`` (with ``operating_points``), ``class_names.json``; plus ``config.json``,
``loss_curve.png``, ``roc.png`` and ``attention_overlays.png``.
"""

from __future__ import annotations

import dataclasses
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

from radpair.core.model_card import OperatingPoints
from radpair.core.task import TaskDefinition
from radpair.training.augment import augment
from radpair.training.config import FinetuneConfig, TrainConfig
from radpair.training.data import PairedStudy, patient_folds, volume_dataset
from radpair.training.evaluate import (
    Predictions,
    choose_operating_points,
    confusion,
    predict,
    roc_curves,
    scores,
    summarise,
)
from radpair.training.models import Classifier, Ensemble, load_image_checkpoint
from radpair.training.plots import plot_losses, plot_overlays, plot_roc
from radpair.training.runtime import (
    autocast,
    seed_everything,
    step_generator,
    write_json,
)

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


def _scheduler(optimiser: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LRScheduler:
    f = config.finetune
    warmup = max(f.warmup_epochs, 0) * steps_per_epoch
    total = max(f.epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(total - warmup, 1))))

    return torch.optim.lr_scheduler.LambdaLR(optimiser, factor)


def class_weights(studies: Sequence[PairedStudy], indices: Sequence[int], n_classes: int) -> torch.Tensor:
    """Inverse class frequency among the training fold's labelled studies (mean 1)."""
    counts = torch.zeros(n_classes)
    for i in indices:
        if studies[i].label_index >= 0:
            counts[studies[i].label_index] += 1
    weights = counts.sum() / counts.clamp_min(1.0) / n_classes
    return weights / weights.mean()


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How a fold fine-tunes: whether the class loss trains the encoder, and the new parts' rate."""

    labelled: int
    class_trains_encoder: bool
    head_lr_factor: float


def resolve_recipe(config: FinetuneConfig, labelled: int) -> Recipe:
    """The "auto" settings for a training part of ``labelled`` labelled studies. A few dozen labels
    need the encoder to learn the class (benchmark, 28 per fold: external AUC over random +0.074
    against +0.008); a few hundred let it memorise them (shipped model, 262: first fold 0.788 against
    0.766 with the encoder off the class loss, 0.799 with new parts at 3x): docs/training.md."""
    few = labelled < config.few_labels
    trains = few if config.class_trains_encoder == "auto" else bool(config.class_trains_encoder)
    factor = (1.0 if few else 3.0) if config.head_lr_factor == "auto" else float(config.head_lr_factor)
    return Recipe(labelled, trains, factor)


def train_fold(config: TrainConfig, num_classes: int, dataset, studies: Sequence[PairedStudy], train_idx: Sequence[int],
               init: Path | None, device: torch.device, fold: int, recipe: Recipe) -> tuple[Classifier, list[dict[str, float]], float]:
    """One fold's classifier; returns (model, per-epoch losses, seconds per epoch)."""
    f = config.finetune
    seed_everything(config.seed + fold)
    model = Classifier(config.image.model_config(num_classes))
    if init is not None:
        load_image_checkpoint(model.encoder, init)
    model.to(device)
    optimiser = torch.optim.AdamW(_parameter_groups(model, f.lr, recipe.head_lr_factor), lr=f.lr, weight_decay=f.weight_decay)
    batch_size = min(f.batch_size, len(train_idx))
    loader = DataLoader(Subset(dataset, list(train_idx)), batch_size=batch_size, shuffle=True,
                        drop_last=len(train_idx) > batch_size, generator=torch.Generator().manual_seed(config.seed + fold),
                        num_workers=config.data.num_workers, persistent_workers=config.data.num_workers > 0)
    scheduler = _scheduler(optimiser, config, len(loader))
    weights = class_weights(studies, train_idx, num_classes).to(device)
    history, began = [], time.perf_counter()
    for epoch in range(f.epochs):
        model.train()
        gen = step_generator(config.seed, 3, fold, epoch)
        sums = {"class": 0.0, "lesion": 0.0, "total": 0.0}
        batches = 0
        for batch in tqdm(loader, desc=f"fold {fold + 1} epoch {epoch + 1}/{f.epochs}", unit="batch", leave=False):
            x = batch["image"].as_subclass(torch.Tensor).to(device)
            x = augment(x, gen) if config.data.augment else x
            labels = torch.as_tensor(batch["label"], device=device)
            lesion = torch.as_tensor(batch["lesion"], device=device)
            with autocast(device):
                out = model.forward_logits(x, class_trains_encoder=recipe.class_trains_encoder)
            parts = _losses(out, labels, lesion, weights, f.lesion_weight)
            optimiser.zero_grad(set_to_none=True)
            parts["total"].backward()
            optimiser.step()
            scheduler.step()
            for k in sums:
                sums[k] += float(parts[k].detach())
            batches += 1
        history.append({k: v / max(batches, 1) for k, v in sums.items()})
    return model, history, (time.perf_counter() - began) / max(f.epochs, 1)


def _parameter_groups(model: Classifier, lr: float, head_factor: float) -> list[dict]:
    """The encoder at ``lr``, everything trained from scratch at ``head_factor`` × ``lr``: a new
    branch at the pre-trained encoder's rate is still learning when the cosine schedule ends."""
    encoder = {id(p) for p in model.encoder.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in trainable if id(p) in encoder], "lr": lr},
            {"params": [p for p in trainable if id(p) not in encoder], "lr": lr * head_factor}]


def _losses(out: dict[str, torch.Tensor], labels: torch.Tensor, lesion: torch.Tensor, weights: torch.Tensor,
            lesion_weight: float) -> dict[str, torch.Tensor]:
    zero = out["class_logits"].sum() * 0.0
    classed = labels >= 0
    class_loss = F.cross_entropy(out["class_logits"][classed].float(), labels[classed], weight=weights) if classed.any() else zero
    known = lesion >= 0
    lesion_loss = F.binary_cross_entropy_with_logits(out["lesion_logit"][known].float(), lesion[known].float()) \
        if known.any() else zero
    return {"class": class_loss, "lesion": lesion_loss, "total": class_loss + lesion_weight * lesion_loss}


def _served_model(config: TrainConfig, num_classes: int, members: Sequence[dict[str, torch.Tensor]],
                  best: int) -> tuple[Classifier | Ensemble, dict]:
    """What the run serves, and its ``model_config.json``: the ensemble of the folds or the best one."""
    model_config = config.image.model_config(num_classes)
    if not config.finetune.ensemble:
        model = Classifier(model_config)
        model.load_state_dict(members[best])
        return model.eval(), model_config
    ensemble = Ensemble(model_config, len(members))
    for member, state in zip(ensemble.members, members):
        member.load_state_dict(state)
    return ensemble.eval(), {**model_config, "members": len(members)}


def finetune(config: TrainConfig, task: TaskDefinition, studies: Sequence[PairedStudy], out: Path,
             init: str = "random", external: Sequence[PairedStudy] = (), device: str = "") -> dict:
    """k-fold fine-tuning on the ``studies`` with a label or a known lesion presence; writes the run
    directory ``out``; returns metrics."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    f = config.finetune
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    params = task.input.preprocess
    classes = list(task.class_names)
    init_path = resolve_init(init)
    known = [s for s in studies if s.label_index >= 0 or s.lesion >= 0]
    missing = [classes[k] for k in range(len(classes)) if not any(s.label_index == k for s in known)]
    if missing:
        raise ValueError(f"fine-tuning needs labelled studies of every class; none of {', '.join(missing)}")
    write_json(out / "config.json", {**config.to_dict(), "init": init})
    with_masks = all(s.mask_path is not None for s in known)
    dataset = volume_dataset(known, params, with_masks=with_masks, cache_dir=config.data.cache_dir)
    ext = [s for s in external if s.label_index >= 0 or s.lesion >= 0]
    ext_data = volume_dataset(ext, params, with_masks=all(s.mask_path for s in ext), cache_dir=config.data.cache_dir) if ext else None
    names = [s.study_uid[-12:] for s in known]

    fold_preds: list[Predictions] = []
    ext_preds: list[Predictions] = []
    curves: dict[str, list[float]] = {}
    best: tuple[float, int] | None = None
    members: list[dict[str, torch.Tensor]] = []
    epoch_seconds = []
    recipes: list[dict] = []
    for fold, (train_idx, test_idx) in enumerate(patient_folds(known, f.folds, config.seed)):
        recipe = resolve_recipe(f, sum(known[i].label_index >= 0 for i in train_idx))
        recipes.append(dataclasses.asdict(recipe))
        log.info("fold %d/%d: %d labelled training studies: the class loss %s the encoder, new parts at %g x lr",
                 fold + 1, f.folds, recipe.labelled, "trains" if recipe.class_trains_encoder else "does not train",
                 recipe.head_lr_factor)
        model, history, seconds = train_fold(config, len(classes), dataset, known, train_idx, init_path, dev, fold, recipe)
        epoch_seconds.append(seconds)
        curves[f"fold {fold + 1}"] = [h["total"] for h in history]
        fold_preds.append(predict(model, dataset, test_idx, dev, f.batch_size, params,
                                  pictures=3 if fold == 0 else 0, names=names, overlay=task.finding.overlay_rule))
        if ext_data is not None:
            ext_preds.append(predict(model, ext_data, list(range(len(ext))), dev, f.batch_size, params,
                                     overlay=task.finding.overlay_rule))
        auc = scores(fold_preds[-1], classes, OperatingPoints())["auc"]
        key = -1.0 if math.isnan(auc) else auc
        if best is None or key > best[0]:
            best = (key, fold)
        members.append({k: v.detach().cpu().clone() for k, v in model.state_dict().items()})
        log.info("fold %d/%d: internal AUC %.3f, class loss %.3f -> %.3f, lesion loss %.3f -> %.3f", fold + 1, f.folds,
                 auc, history[0]["class"], history[-1]["class"], history[0]["lesion"], history[-1]["lesion"])

    pooled = Predictions()
    for pred in fold_preds:
        pooled.extend(pred)
    operating = choose_operating_points(pooled, task.finding.overlay_rule)
    internal = [scores(p, classes, operating) for p in fold_preds]
    external_scores = [scores(p, classes, operating) for p in ext_preds]
    assert best is not None
    served, model_config = _served_model(config, len(classes), members, best[1])
    torch.save(served.state_dict(), out / "classifier.pt")
    write_json(out / "model_config.json", model_config)
    served_preds = None
    if ext_data is not None:
        # The best fold alone was already scored there; an ensemble is scored once, here.
        served_preds = ext_preds[best[1]] if not f.ensemble else predict(
            served.to(dev), ext_data, list(range(len(ext))), dev, f.batch_size, params,
            overlay=task.finding.overlay_rule)
    (out / "preprocess.json").write_text(params.to_json())
    write_json(out / "class_names.json", classes)
    metrics = {
        "init": init,
        "task": task.name,
        "class_names": classes,
        # The fold served alone, or None when the run serves the ensemble of all folds.
        "selected_fold": None if f.ensemble else best[1] + 1,
        "ensemble": len(members) if f.ensemble else 0,
        # Each fold's resolved fine-tuning recipe (finetune.class_trains_encoder / head_lr_factor "auto").
        "recipes": recipes,
        "operating_points": dataclasses.asdict(operating),
        "internal": summarise(internal),
        "internal_pooled": scores(pooled, classes, operating),
        "internal_confusion": confusion(pooled.labels, pooled.probabilities, len(classes)),
        "external": summarise(external_scores) if external_scores else None,
        # The served model (ensemble or selected fold) on the external cohort.
        "external_served": scores(served_preds, classes, operating) if served_preds is not None else None,
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "device": str(dev),
        "data": {"studies": len(known), "labelled": sum(s.label_index >= 0 for s in known),
                 "lesion_free": sum(s.lesion == 0 for s in known), "external": len(ext),
                 "study_uids": sorted(s.study_uid for s in known)},
    }
    write_json(out / "metrics.json", metrics)
    plot_losses(curves, out / "loss_curve.png")
    plot_roc(roc_curves(pooled, classes, "internal (out of fold)"), out / "roc.png")
    if served_preds is not None:
        plot_roc(roc_curves(served_preds, classes, "external"), out / "roc_external.png")
    if pooled.pictures:
        plot_overlays(pooled.pictures, out / "attention_overlays.png", operating.attention_threshold)
    return metrics
