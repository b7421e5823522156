"""Tiny end-to-end runs on a real 32³ cohort: pre-train -> fine-tune -> evaluate -> export contract."""

from __future__ import annotations

import json

import torch

from radpair.cli import main
from radpair.training.config import load_config
from radpair.training.augment import augment
from radpair.training.contrastive import ContrastiveModel
from radpair.training.data import studies_from_cohort
from radpair.training.finetune import finetune
from radpair.training.monitor import collapsed, embedding_stats
from tests.support.models import TINY

SETS = [arg for item in TINY for arg in ("--set", item)]


def test_pretrain_finetune_evaluate_write_all_outputs(cohorts, tiny_task_path, tmp_path):
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    task = ["--task", str(tiny_task_path)]
    args = ["train", "pretrain", "--cohort", str(cohorts["internal"]), "--out", str(pre), *task, *SETS]
    assert main([*args, "--set", "pretrain.epochs=1"]) == 0
    assert main([*args, "--set", "pretrain.epochs=2", "--resume"]) == 0  # continues at epoch 2
    history = json.loads((pre / "metrics.json").read_text())["epochs"]
    assert [e["epoch"] for e in history] == [1, 2]
    assert {"loss_global", "loss_local", "loss_total", "loss_weights", "studies_per_s", "collapsed"} <= set(history[0])
    # The collapse monitor, in training and eval mode, for both embeddings.
    for key in ("image_train", "text_train", "image_eval", "text_eval"):
        assert set(history[0][key]) == {"mean_cosine", "spread"}, key
    for name in ("config.json", "preprocess.json", "checkpoint.pt", "image_encoder.pt", "loss_curve.png"):
        assert (pre / name).is_file(), name

    assert main(["train", "finetune", "--cohort", str(cohorts["internal"]), "--external", str(cohorts["external"]),
                 "--init", str(pre), "--out", str(fine), *task, *SETS, "--set", "finetune.epochs=2"]) == 0
    for name in ("classifier.pt", "model_config.json", "preprocess.json", "metrics.json", "class_names.json",
                 "config.json", "loss_curve.png", "roc.png", "roc_external.png", "attention_overlays.png"):
        assert (fine / name).is_file(), name
    metrics = json.loads((fine / "metrics.json").read_text())
    for split in ("internal", "external"):
        for key in ("auc", "precision", "recall", "f1", "lesion_auc", "sensitivity", "specificity",
                    "dice_2d", "dice_3d", "dice_2d_oracle", "dice_3d_oracle"):
            assert len(metrics[split][key]["folds"]) == 2 and "std" in metrics[split][key], key
    assert 0.0 <= metrics["internal"]["dice_3d"]["mean"] <= 1.0
    # The oracle is the best threshold for the scored set: never below the chosen one.
    assert metrics["internal_pooled"]["dice_2d_oracle"] >= metrics["internal_pooled"]["dice_2d"]
    # The shipped task's finding is hyperintense: the overlay is the attended hyperintense signal.
    assert metrics["operating_points"]["overlay"] == "attention-hyperintense"
    assert set(metrics["operating_points"]) == {"lesion_threshold", "attention_threshold", "overlay"}
    assert metrics["data"]["lesion_free"] > 0, "lesion-free studies train the lesion head"
    assert json.loads((fine / "class_names.json").read_text()) == ["BRAF-fusion", "BRAF-V600E"]
    # The run serves the ensemble of its two fold models, and scores it on the external cohort.
    assert metrics["ensemble"] == 2 and metrics["selected_fold"] is None
    # A tiny cohort is few labels: the "auto" recipe lets the class loss train the encoder.
    assert [r["class_trains_encoder"] for r in metrics["recipes"]] == [True, True]
    assert all(0 < r["labelled"] < 100 for r in metrics["recipes"])
    assert json.loads((fine / "model_config.json").read_text())["members"] == 2
    assert 0.0 <= metrics["external_served"]["auc"] <= 1.0

    # The Triton exporter's loader accepts the run directory and the model traces (contract 4).
    from radpair.training.export import load_run

    model, params, class_names, _ = load_run(fine)
    x = torch.randn(1, 1, *params.spatial_size)
    probabilities, lesion, attention, _ = torch.jit.trace(model.eval(), x)(x)
    assert probabilities.shape == (1, 2) and lesion.shape == (1, 1) and attention.shape == (1, *params.spatial_size)

    out = tmp_path / "evaluation"
    assert main(["evaluate", "--cohort", str(cohorts["external"]), "--run", str(fine), "--out", str(out), *task]) == 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["n"] > 0 and 0.0 <= evaluation["dice_2d"] <= 1.0
    assert evaluation["operating_points"] == metrics["operating_points"], "the run's own thresholds, not the set's"
    assert (out / "roc.png").is_file()

    # An exported version is scored directly, from the TorchScript Triton serves, with the same result.
    assert main(["export", str(fine), "--repo", str(tmp_path / "repo")]) == 0
    version = tmp_path / "repo" / "radpair_classifier" / "1"
    assert main(["evaluate", "--cohort", str(cohorts["external"]), "--run", str(version), "--out",
                 str(tmp_path / "ev2"), *task]) == 0
    exported = json.loads((tmp_path / "ev2" / "evaluation.json").read_text())
    assert exported["model"] == "radpair_classifier version 1"
    assert abs(exported["auc"] - evaluation["auc"]) < 1e-4 and abs(exported["dice_2d"] - evaluation["dice_2d"]) < 1e-4


def test_same_seed_gives_same_metrics(cohorts, tiny_task, tmp_path):
    config = load_config(overrides=[*TINY, "finetune.epochs=1"])
    studies = studies_from_cohort(cohorts["internal"], tiny_task)
    first = finetune(config, tiny_task, studies, tmp_path / "a", device="cpu")
    second = finetune(config, tiny_task, studies, tmp_path / "b", device="cpu")
    assert first["internal"] == second["internal"]
    a = torch.load(tmp_path / "a" / "classifier.pt")
    b = torch.load(tmp_path / "b" / "classifier.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_image_only_baseline_learns_without_collapsing():
    """SimSiam (predictor + stop-gradient, normalised projector): on 8 volumes, each with its blob
    somewhere else, the loss falls and the eval-mode embeddings spread out. A collapsed solution
    would also lower this loss (every view maps to one point), which is what the monitor tells apart."""
    config = load_config(overrides=[*TINY, "pretrain.mode=image_only"])
    torch.manual_seed(0)
    model = ContrastiveModel(config).train()
    generator = torch.Generator().manual_seed(0)
    images = 0.3 * torch.randn(8, 1, 32, 32, 32, generator=generator)
    for i in range(8):
        images[i, :, 4 + 3 * i:10 + 3 * i, 8:20, 10:22] += 3.0
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(30):
        parts = model.loss(model.embed(augment(images, generator), augment(images, generator)),
                           torch.zeros(8, dtype=torch.long), generator)
        optimiser.zero_grad()
        parts["total"].backward()
        optimiser.step()
        losses.append(float(parts["total"].detach()))
    model.eval()
    with torch.no_grad():
        stats = embedding_stats(model.embed(images, images)["image"])
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses
    assert not collapsed(stats) and stats["mean_cosine"] < 0.5, stats


def test_loss_decreases_on_an_overfit_batch():
    config = load_config(overrides=[*TINY, "pretrain.learned_weighting=false", "image.frozen_stages=0"])
    torch.manual_seed(0)
    model = ContrastiveModel(config).train()
    images = torch.randn(4, 1, 32, 32, 32)
    text = model.text_encoder.tokenize(["left frontal lobe mass with cystic component", "cerebellar vermis lesion",
                                        "pons expansile lesion", "no intracranial abnormality"])
    locations = torch.tensor([0, 1, 1, 3])
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for step in range(15):
        loss = model(images, text, locations, torch.Generator().manual_seed(step))["total"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3]), losses


def test_without_ensembling_the_run_serves_its_best_fold(cohorts, tiny_task, tmp_path):
    config = load_config(overrides=[*TINY, "finetune.epochs=1", "finetune.ensemble=false"])
    metrics = finetune(config, tiny_task, studies_from_cohort(cohorts["internal"], tiny_task), tmp_path, device="cpu")
    assert metrics["ensemble"] == 0 and metrics["selected_fold"] in (1, 2)
    assert "members" not in json.loads((tmp_path / "model_config.json").read_text())
    assert not any(k.startswith("members.") for k in torch.load(tmp_path / "classifier.pt"))
