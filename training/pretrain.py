"""Contrastive pre-training (``radpair train pretrain``): image–report, or the image-only baseline.

Writes a run directory: ``config.json`` (resolved), ``preprocess.json``, ``checkpoint.pt``
(model + optimiser + epoch, for ``--resume``), ``image_encoder.pt`` (what fine-tuning loads),
``metrics.json`` (per epoch: every loss term, learned weights, throughput and the collapse monitor
of the image and report embeddings in training and in eval mode) and ``loss_curve.png`` (one curve
per term: a term that does not move is visible).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import torch
from monai.data import DataLoader
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, RandomSampler
from tqdm import tqdm

from radpair.core.task import TaskDefinition
from radpair.training import distributed
from radpair.training.augment import augment
from radpair.training.config import TrainConfig
from radpair.training.contrastive import ContrastiveModel
from radpair.training.data import PairedStudy, volume_dataset
from radpair.training.models import load_image_checkpoint
from radpair.training.monitor import embedding_stats, summarise, warn_if_collapsed
from radpair.training.plots import plot_losses
from radpair.training.runtime import (
    autocast,
    seed_everything,
    step_generator,
    write_json,
)
from radpair.training.text import EncodedReports, clean_report

log = logging.getLogger(__name__)

# Studies embedded in eval mode at the end of each epoch for the collapse monitor.
MONITOR_STUDIES = 64


def pretrain(config: TrainConfig, task: TaskDefinition, studies: Sequence[PairedStudy], out: Path,
             resume: bool = False, device: str = "") -> dict:
    """Pre-train on ``studies`` (labels unused) and write the run directory ``out``; returns metrics.

    The task gives the preprocessing, the leak terms removed from the reports and the locations
    the loss weights by."""
    ctx = distributed.setup(device)
    seed_everything(config.seed)
    p = config.pretrain
    out = Path(out)
    params = task.input.preprocess
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", config.to_dict())
        (out / "preprocess.json").write_text(params.to_json())
    reports = [clean_report(s.report, task.report.leak_terms) for s in studies]
    dataset = volume_dataset(studies, params, cache_dir=config.data.cache_dir)
    per_rank = max(2, min(p.batch_size, len(studies)) // ctx.world_size)
    if ctx.world_size > 1:
        sampler = DistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=True, seed=config.seed, drop_last=True)
    else:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(config.seed))
    loader = DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True,
                        num_workers=config.data.num_workers,
                        persistent_workers=config.data.num_workers > 0, pin_memory=ctx.device.type == "cuda")

    model = ContrastiveModel(config)
    if config.image.checkpoint:
        load_image_checkpoint(model.image_encoder, config.image.checkpoint)
    model.to(ctx.device)
    trainable = [q for q in model.parameters() if q.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=p.lr, weight_decay=p.weight_decay)
    history: list[dict] = []
    start = 0
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=ctx.device, weights_only=False)
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        start, history = state["epoch"], state["history"]
        log.info("resuming %s at epoch %d", out, start + 1)
    net = DistributedDataParallel(model) if ctx.world_size > 1 else model
    # A fully frozen text encoder gives the same output at every step: encode each report once.
    encoded = (model.text_encoder.encode_all(reports)
               if model.contrastive and not model.text_encoder.trainable else None)

    def text_of(batch: dict, images: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor] | torch.Tensor:
        if not model.contrastive:  # image-only: the second augmented view
            return augment(images, generator)
        if encoded is not None:
            return encoded.batch([int(i) for i in batch["index"]], ctx.device)
        return {k: v.to(ctx.device) for k, v in model.text_encoder.tokenize([reports[int(i)] for i in batch["index"]]).items()}

    for epoch in range(start, p.epochs):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(config.seed * 1000 + epoch)
        model.train()
        augment_gen = step_generator(config.seed, 1, epoch, ctx.rank)
        sums: dict[str, float] = {}
        train_stats: dict[str, list[dict[str, float]]] = {"image": [], "text": []}
        steps, seen, began = 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"pretrain {epoch + 1}/{p.epochs}", unit="batch", leave=False, disable=not ctx.is_main)
        for batch in bar:
            images = batch["image"].as_subclass(torch.Tensor).to(ctx.device, non_blocking=True)
            view = augment(images, augment_gen) if config.data.augment else images
            text = text_of(batch, images, augment_gen)
            locations = torch.as_tensor(batch["location"], device=ctx.device)
            negatives = step_generator(config.seed, 2, epoch, steps)
            with autocast(ctx.device):
                if ctx.world_size > 1:  # through the DDP wrapper, which all-reduces the gradients
                    embedded, parts = None, net(view, text, locations, negatives)
                else:
                    embedded = model.embed(view, text)
                    parts = model.loss(embedded, locations, negatives)
            optimiser.zero_grad(set_to_none=True)
            parts["total"].backward()
            optimiser.step()
            steps += 1
            seen += images.shape[0] * ctx.world_size
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            if embedded is not None:
                for key in train_stats:
                    train_stats[key].append(embedding_stats(embedded[key]))
            postfix = {"loss": f"{float(parts['total'].detach()):.4f}"}
            if train_stats["image"]:
                postfix["img_cos"] = f"{train_stats['image'][-1]['mean_cosine']:.2f}"
            bar.set_postfix(**postfix, studies_s=f"{seen / (time.perf_counter() - began):.1f}")
        seconds = time.perf_counter() - began
        record = {"epoch": epoch + 1, "seconds": seconds, "studies_per_s": seen / max(seconds, 1e-9),
                  **{f"loss_{k}": v / max(steps, 1) for k, v in sums.items()}}
        if model.weighting is not None:
            record["loss_weights"] = torch.exp(-model.weighting.log_vars.detach()).tolist()
        for key, values in train_stats.items():
            if values:
                record[f"{key}_train"] = {k: sum(v[k] for v in values) / len(values) for k in values[0]}
        if ctx.is_main:
            record.update(_eval_stats(model, dataset, reports, encoded, ctx.device, per_rank))
            collapse = [warn_if_collapsed(f"{key} ({mode} mode)", record[f"{key}_{mode}"], epoch + 1)
                        for key in ("image", "text") for mode in ("train", "eval") if f"{key}_{mode}" in record]
            record["collapsed"] = any(collapse)
            log.info("pretrain epoch %d/%d: loss %.4f (%s), image cosine %.3f (eval), %.1f studies/s", epoch + 1, p.epochs,
                     record.get("loss_total", float("nan")),
                     ", ".join(f"{k.removeprefix('loss_')} {v:.4f}" for k, v in record.items()
                               if k.startswith("loss_") and k not in ("loss_total", "loss_weights")),
                     record["image_eval"]["mean_cosine"], record["studies_per_s"])
        history.append(record)
        if ctx.is_main:  # per epoch, so a long run can be watched (and stopped) while it trains
            write_json(out / "metrics.json", _summary(config, studies, ctx, history))
        if ctx.is_main and ((epoch + 1) % p.checkpoint_every == 0 or epoch + 1 == p.epochs):
            torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                        "epoch": epoch + 1, "history": history}, checkpoint)
    metrics = _summary(config, studies, ctx, history)
    if ctx.is_main:
        summarise(history)
        torch.save(model.image_encoder.state_dict(), out / "image_encoder.pt")
        write_json(out / "metrics.json", metrics)
        terms = sorted({k for h in history for k in h if k.startswith("loss_") and k != "loss_weights"})
        plot_losses({t.removeprefix("loss_"): [h.get(t, float("nan")) for h in history] for t in terms},
                    out / "loss_curve.png", separate=True)
    return metrics


def _summary(config: TrainConfig, studies: Sequence[PairedStudy], ctx: distributed.Context, history: list[dict]) -> dict:
    return {"mode": config.pretrain.mode, "epochs": history, "epochs_planned": config.pretrain.epochs,
            "studies": len(studies), "world_size": ctx.world_size, "device": str(ctx.device),
            "collapsed": bool(history and history[-1].get("collapsed"))}


@torch.no_grad()
def _eval_stats(model: ContrastiveModel, dataset, reports: Sequence[str], encoded: EncodedReports | None,
                device: torch.device, batch_size: int) -> dict[str, dict[str, float]]:
    """The collapse monitor in eval mode, on up to MONITOR_STUDIES studies without augmentation."""
    model.eval()
    n = min(len(dataset), MONITOR_STUDIES)
    images, texts = [], []
    for start in range(0, n, batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, n))]
        x = torch.stack([torch.as_tensor(item["image"]) for item in items]).to(device)
        if model.contrastive and encoded is not None:
            embedded = model.embed(x, encoded.batch([int(item["index"]) for item in items], device))
        elif model.contrastive:
            tokens = model.text_encoder.tokenize([reports[int(item["index"])] for item in items])
            embedded = model.embed(x, {k: v.to(device) for k, v in tokens.items()})
        else:
            embedded = model.embed(x, x)
        images.append(embedded["image"])
        texts.append(embedded["text"])
    model.train()
    stats = {"image_eval": embedding_stats(torch.cat(images))}
    if model.contrastive:
        stats["text_eval"] = embedding_stats(torch.cat(texts))
    return stats
