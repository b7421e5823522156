"""Contrastive pre-training (``radpair train pretrain``): image–report, or image-only baseline.

Writes a run directory: ``config.json`` (resolved), ``preprocess.json``, ``checkpoint.pt``
(model + optimiser + epoch, for ``--resume``), ``image_encoder.pt`` (what fine-tuning loads),
``metrics.json`` (per-epoch losses, throughput) and ``loss_curve.png``.
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
from radpair.training.config import TrainConfig
from radpair.training.contrastive import ContrastiveModel
from radpair.training.data import PairedStudy, augment, volume_dataset
from radpair.training.models import load_image_checkpoint
from radpair.training.plots import plot_losses
from radpair.training.runtime import autocast, seed_everything, step_generator, write_json
from radpair.training.text import clean_report

log = logging.getLogger(__name__)


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
               if p.mode == "contrastive" and not model.text_encoder.trainable else None)

    for epoch in range(start, p.epochs):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)
        else:
            sampler.generator.manual_seed(config.seed * 1000 + epoch)
        model.train()
        augment_gen = step_generator(config.seed, 1, epoch, ctx.rank)
        sums: dict[str, float] = {}
        steps, seen, began = 0, 0, time.perf_counter()
        bar = tqdm(loader, desc=f"pretrain {epoch + 1}/{p.epochs}", unit="batch", leave=False, disable=not ctx.is_main)
        for batch in bar:
            images = batch["image"].as_subclass(torch.Tensor).to(ctx.device, non_blocking=True)
            view = augment(images, augment_gen) if config.data.augment else images
            if p.mode == "image_only":
                text = augment(images, augment_gen)
            elif encoded is not None:
                text = encoded.batch([int(i) for i in batch["index"]], ctx.device)
            else:
                text = {k: v.to(ctx.device) for k, v in model.text_encoder.tokenize(
                    [reports[int(i)] for i in batch["index"]]).items()}
            locations = torch.as_tensor(batch["location"], device=ctx.device)
            with autocast(ctx.device):
                parts = net(view, text, locations, step_generator(config.seed, 2, epoch, steps))
            optimiser.zero_grad(set_to_none=True)
            parts["total"].backward()
            optimiser.step()
            steps += 1
            seen += images.shape[0] * ctx.world_size
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{float(parts['total'].detach()):.4f}", studies_s=f"{seen / (time.perf_counter() - began):.1f}")
        seconds = time.perf_counter() - began
        record = {"epoch": epoch + 1, "seconds": seconds, "studies_per_s": seen / max(seconds, 1e-9),
                  **{f"loss_{k}": v / max(steps, 1) for k, v in sums.items()}}
        if model.weighting is not None:
            record["loss_weights"] = torch.exp(-model.weighting.log_vars.detach()).tolist()
        history.append(record)
        if ctx.is_main:
            log.info("pretrain epoch %d/%d: loss %.4f, %.1f studies/s", epoch + 1, p.epochs,
                     record.get("loss_total", float("nan")), record["studies_per_s"])
            if (epoch + 1) % p.checkpoint_every == 0 or epoch + 1 == p.epochs:
                torch.save({"model": model.state_dict(), "optimiser": optimiser.state_dict(),
                            "epoch": epoch + 1, "history": history}, checkpoint)
    metrics = {"mode": p.mode, "epochs": history, "studies": len(studies), "world_size": ctx.world_size,
               "device": str(ctx.device)}
    if ctx.is_main:
        torch.save(model.image_encoder.state_dict(), out / "image_encoder.pt")
        write_json(out / "metrics.json", metrics)
        plot_losses({"pretrain": [h.get("loss_total", float("nan")) for h in history]}, out / "loss_curve.png")
    return metrics
