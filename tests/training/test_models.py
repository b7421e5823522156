"""training.models: the classifier contract (shapes, [0,1] attention on a fine grid, traceability) and checkpoints."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from radpair.training.models import ImageEncoder, build_classifier, load_image_checkpoint

SMALL = {"depth": 10, "widths": [8, 16, 32, 64], "head_hidden": 16, "region_channels": 16, "num_classes": 2}


@pytest.mark.parametrize("evidence", ["regions", "local"])
def test_forward_contract_shapes_and_ranges(evidence):
    torch.manual_seed(0)
    model = build_classifier({**SMALL, "evidence": evidence}).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    probabilities, lesion, attention, embedding = model(x)
    assert probabilities.shape == (2, 2) and torch.allclose(probabilities.sum(1), torch.ones(2))
    assert lesion.shape == (2, 1) and float(lesion.min()) >= 0.0 and float(lesion.max()) <= 1.0
    assert attention.shape == (2, 32, 32, 32)
    assert float(attention.min()) >= 0.0 and float(attention.max()) <= 1.0
    assert float(attention.max()) > 0.5  # scaled to its maximum, not a constant map
    assert embedding.shape == (2, 16 + 3)  # attended regions + the attention's centroid


@pytest.mark.parametrize("evidence", ["regions", "local"])
@pytest.mark.parametrize(("size", "grid"), [(32, 8), (64, 16)])
def test_attention_lives_on_a_grid_fine_enough_for_a_lesion(size, grid, evidence):
    """Stage 2 of a stride-2-stem ResNet: input / 4 cells per axis (the last stage would give / 16)."""
    encoder = ImageEncoder({**SMALL, "evidence": evidence}).eval()
    with torch.no_grad():
        out = encoder(torch.randn(1, 1, size, size, size))
    assert out["regions"].shape[2:] == (grid, grid, grid)
    assert out["attention"].shape == (1, grid ** 3)
    assert torch.allclose(out["attention"].sum(1), torch.ones(1))


@pytest.mark.parametrize("evidence", ["regions", "local"])
def test_trace_matches_eager(evidence):
    torch.manual_seed(0)
    model = build_classifier({**SMALL, "evidence": evidence}).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    traced = torch.jit.trace(model, x)
    other = torch.randn(3, 1, 32, 32, 32)  # another batch size goes through the traced graph too
    for a, b in zip(traced(other), model(other)):
        assert torch.allclose(a, b, atol=1e-5)


def test_encoder_scale_reads_a_coarser_input_while_the_region_of_interest_reads_the_full_one():
    """``encoder_scale = 0.75`` on a 64³ input: the encoder is the same network on the 48³
    average-pooled volume, the attention comes back on the 64³ input, and the region of interest is
    cut from the 64³ input: a detail the pooling erases changes the class but not the attention."""
    torch.manual_seed(0)
    model = build_classifier({**SMALL, "roi_size": 12, "encoder_scale": 0.75}).eval()
    full_scale = ImageEncoder({**SMALL, "encoder_scale": 1.0}).eval()
    full_scale.load_state_dict(model.encoder.state_dict())
    x = torch.randn(2, 1, 64, 64, 64)
    # A 3D checkerboard sums to zero over every 2-voxel window of the 64 -> 48 pooling.
    index = torch.arange(64)
    board = ((index.reshape(-1, 1, 1) + index.reshape(1, -1, 1) + index) % 2).float() * 2 - 1
    detail = x + 0.5 * board
    with torch.no_grad():
        out = model.encoder(x)
        assert out["regions"].shape[2:] == (12, 12, 12)
        assert torch.allclose(out["global"], full_scale(F.adaptive_avg_pool3d(x, 48))["global"], atol=1e-5)
        before, after = model(x), model(detail)
    assert before[2].shape == (2, 64, 64, 64)
    assert not torch.allclose(before[0], after[0], atol=1e-4)
    assert torch.allclose(before[1], after[1], atol=1e-5) and torch.allclose(before[2], after[2], atol=1e-5)
    traced = torch.jit.trace(model, x)
    for a, b in zip(traced(detail), model(detail)):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="encoder_scale"):
        build_classifier({**SMALL, "encoder_scale": 1.5})


def test_frozen_stages_have_no_gradient_and_stay_in_eval():
    encoder = ImageEncoder({**SMALL, "frozen_stages": 2}).train()
    assert not encoder.backbone.layer2.training and encoder.backbone.layer3.training
    encoder(torch.randn(2, 1, 32, 32, 32))["global"].sum().backward()
    assert encoder.backbone.layer1[0].conv1.weight.grad is None
    assert encoder.backbone.layer3[0].conv1.weight.grad is not None


def test_unknown_config_key_is_refused():
    with pytest.raises(ValueError, match="unknown"):
        build_classifier({"detph": 18, "num_classes": 2})


def test_medicalnet_style_checkpoint_loads(tmp_path):
    source = ImageEncoder(SMALL)
    state = {"state_dict": {f"module.{k}": v + 1 for k, v in source.backbone.state_dict().items()}}
    torch.save(state, tmp_path / "resnet_10.pth")
    target = build_classifier(SMALL)
    load_image_checkpoint(target.encoder, tmp_path / "resnet_10.pth")
    assert torch.equal(target.encoder.backbone.conv1.weight, source.backbone.conv1.weight + 1)
    with pytest.raises(ValueError, match="different depth/widths"):
        load_image_checkpoint(ImageEncoder({**SMALL, "widths": [4, 8, 16, 32]}), tmp_path / "resnet_10.pth")


def test_the_classifier_has_one_output_per_task_class():
    probabilities, _, _, _ = build_classifier({**SMALL, "num_classes": 3}).eval()(torch.randn(2, 1, 32, 32, 32))
    assert probabilities.shape == (2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        build_classifier({k: v for k, v in SMALL.items() if k != "num_classes"})


def test_an_ensemble_of_fold_models_serves_their_mean_through_one_trace():
    torch.manual_seed(0)
    ensemble = build_classifier({**SMALL, "members": 3}).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    outs = [member(x) for member in ensemble.members]
    probabilities, lesion, attention, embedding = ensemble(x)
    assert torch.allclose(probabilities, torch.stack([o[0] for o in outs]).mean(0))
    assert torch.allclose(lesion, torch.stack([o[1] for o in outs]).mean(0))
    assert torch.allclose(embedding, torch.stack([o[3] for o in outs]).mean(0))
    mean_attention = torch.stack([o[2] for o in outs]).mean(0)
    # Rescaled so the most attended voxel is 1 again, like one classifier's map.
    assert torch.allclose(attention.flatten(1).amax(1), torch.ones(2))
    assert torch.allclose(attention, mean_attention / mean_attention.flatten(1).amax(1).reshape(-1, 1, 1, 1))
    traced = torch.jit.trace(ensemble, x)
    for a, b in zip(traced(torch.randn(3, 1, 32, 32, 32)), ensemble(torch.randn(3, 1, 32, 32, 32))):
        assert a.shape == b.shape
    with pytest.raises(ValueError, match="at least 2"):
        from radpair.training.models import Ensemble

        Ensemble(SMALL, 1)


def test_the_evidence_lesion_score_is_the_log_mean_exp_of_the_cells():
    """Flat evidence scores its level; one hot cell among many raises the score by about its excess
    less log(cells), so only a focal finding (or a raised level everywhere) says "lesion"."""
    model = build_classifier(SMALL)
    hidden = torch.zeros(2, SMALL["head_hidden"])
    flat = torch.full((1, 512), -2.0)
    focal = flat.clone()
    focal[0, 100] = 10.0
    logits = model._lesion_logit(torch.cat([flat, focal]), hidden)
    assert torch.allclose(logits[0], torch.tensor(-2.0), atol=1e-5)
    expected = torch.log((torch.exp(torch.tensor(10.0)) + 511 * torch.exp(torch.tensor(-2.0))) / 512)
    assert torch.allclose(logits[1], expected, atol=1e-4)
    assert not hasattr(model, "lesion_head")
    assert hasattr(build_classifier({**SMALL, "lesion_score": "head"}), "lesion_head")


def _blob_volumes(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Smooth random backgrounds; every other one holds a bright 6³ cube at a random place."""
    x = torch.nn.functional.avg_pool3d(torch.randn(n, 1, 32, 32, 32, generator=generator), 5, 1, 2) * 3.0
    lesion = torch.arange(n) % 2
    where = torch.zeros(n, 32, 32, 32, dtype=torch.bool)
    for i in range(n):
        if lesion[i]:
            a, b, c = (int(v) for v in torch.randint(2, 24, (3,), generator=generator))
            where[i, a:a + 6, b:b + 6, c:c + 6] = True
    return x + 2.5 * where.unsqueeze(1), lesion, where


def _train_on_presence_only(norm: str) -> tuple[int, int, bool]:
    """A small classifier trained only on "is there a lesion" per volume; returns (attention peaks
    on the lesion, lesion volumes, lesion and lesion-free volumes separated) on unseen volumes."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_classifier({**SMALL, "norm": norm})
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        x, lesion, _ = _blob_volumes(8, generator)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.forward_logits(x)["lesion_logit"], lesion.float())
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    x, lesion, where = _blob_volumes(16, generator)
    model.eval()
    with torch.no_grad():
        _, probability, attention, _ = model(x)
    peaks = attention.flatten(1).argmax(1)
    hits = [bool(where[i].flatten()[peaks[i]]) for i in range(16) if lesion[i]]
    return sum(hits), len(hits), float(probability[lesion == 1].min()) > float(probability[lesion == 0].max())


def test_the_evidence_lesion_score_teaches_the_attention_where_the_finding_is():
    """Multiple-instance learning: trained only on presence, the attention's peak lands on the
    lesion in volumes it has not seen."""
    hits, lesions, separated = _train_on_presence_only("mixed")
    assert separated
    assert hits >= 6, f"the attention's peak is on the lesion in {hits} of {lesions} volumes"


def test_instance_norm_under_the_evidence_lets_the_peak_land_anywhere():
    """Why ``norm = "mixed"``: with per-volume statistics in the layers the evidence reads, a lesion
    shifts every channel's mean and variance, so every cell can tell a lesion is there. The volumes
    are told apart just as well, but the peak is off the lesion (0 of 8 when this was written)."""
    hits, lesions, separated = _train_on_presence_only("instance")
    assert separated
    assert hits <= lesions // 2, f"the attention's peak is on the lesion in {hits} of {lesions} volumes"


def test_the_region_of_interest_is_cut_around_a_point_of_the_attention_grid():
    """A point of the grid's [-1, 1]³ frame (cell centres, as the centroid is computed) maps to the
    voxel under it: a block at voxels 20-21 / 8-9 / 12-13 of a 32³ volume (8³ grid, 4 voxels a
    cell) lands in the middle of an 8³ cut centred there, and the cut is zero outside the volume."""
    from radpair.training.models import crop_around

    x = torch.zeros(2, 1, 32, 32, 32)
    x[:, :, 20:22, 8:10, 12:14] = 1.0
    to_grid = [2.0 * ((v - 1.5) / 4.0) / 7.0 - 1.0 for v in (20.5, 8.5, 12.5)]
    centre = torch.tensor([to_grid, to_grid])
    cut = crop_around(x, centre, (8, 8, 8), 8)
    assert cut.shape == (2, 1, 8, 8, 8)
    assert torch.allclose(cut[:, :, 3:5, 3:5, 3:5], torch.ones(2, 1, 2, 2, 2), atol=1e-5)
    assert float(cut.sum()) == pytest.approx(16.0, abs=1e-3)
    corner = crop_around(x, torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]), (8, 8, 8), 8)
    assert float(corner[:, :, 6:, 6:, 6:].abs().sum()) == 0.0  # beyond the volume's edge


def test_the_class_head_reads_the_region_of_interest():
    """With ``roi_size`` the class probabilities depend on the branch that reads the cut; the lesion
    probability and the attention do not (where to look is the evidence's business)."""
    torch.manual_seed(0)
    model = build_classifier({**SMALL, "roi_size": 8}).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        before = model(x)
        last_norm = [m for m in model.roi if isinstance(m, torch.nn.BatchNorm3d)][-1]
        last_norm.weight.zero_()
        last_norm.bias.fill_(-1.0)  # the branch now says nothing
        after = model(x)
    assert not torch.allclose(before[0], after[0])
    assert torch.equal(before[1], after[1]) and torch.equal(before[2], after[2])
    assert not hasattr(build_classifier({**SMALL, "roi_size": 0}), "roi")
    with pytest.raises(ValueError, match="roi_size"):
        build_classifier({**SMALL, "roi_size": 3})


def test_without_class_trains_encoder_the_class_loss_leaves_the_encoder_alone():
    """``class_trains_encoder=False``: the class loss trains the region-of-interest branch and the
    heads but sends nothing into the encoder; the lesion loss still does."""
    torch.manual_seed(0)
    model = build_classifier({**SMALL, "roi_size": 8}).train()
    x = torch.randn(4, 1, 32, 32, 32)

    def gradients(loss_of: str, trains: bool) -> tuple[float, float]:
        model.zero_grad(set_to_none=False)
        out = model.forward_logits(x, class_trains_encoder=trains)
        loss = out["class_logits"].logsumexp(1).sum() if loss_of == "class" else out["lesion_logit"].sum()
        loss.backward()
        encoder = sum(float(p.grad.abs().sum()) for p in model.encoder.parameters() if p.grad is not None)
        branch = sum(float(p.grad.abs().sum()) for p in model.roi.parameters() if p.grad is not None)
        return encoder, branch

    encoder, branch = gradients("class", trains=False)
    assert encoder == 0.0 and branch > 0.0
    assert gradients("class", trains=True)[0] > 0.0
    assert gradients("lesion", trains=False)[0] > 0.0


def test_fine_tuning_trains_new_parts_faster_than_the_encoder():
    """Every trainable parameter is in exactly one group: the encoder's at ``lr``, the rest at
    ``head_lr_factor`` × ``lr``; frozen stages in neither."""
    from radpair.training.finetune import _parameter_groups

    model = build_classifier({**SMALL, "roi_size": 8, "frozen_stages": 1})
    encoder_group, new_group = _parameter_groups(model, 1e-4, 3.0)
    assert encoder_group["lr"] == 1e-4 and new_group["lr"] == pytest.approx(3e-4)
    ids = [id(p) for p in encoder_group["params"] + new_group["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(id(p) for p in trainable) and len(trainable) < len(list(model.parameters()))
    assert {id(p) for p in model.roi.parameters()} <= {id(p) for p in new_group["params"]}
    assert {id(p) for p in encoder_group["params"]} <= {id(p) for p in model.encoder.parameters()}


def test_auto_recipe_follows_the_number_of_labels_and_explicit_settings_win():
    """Below ``few_labels`` labelled training studies the class loss trains the encoder and all
    parts learn at one rate; from it on, the encoder is off the class loss and new parts learn 3×."""
    from radpair.training.config import FinetuneConfig
    from radpair.training.finetune import resolve_recipe

    auto = FinetuneConfig()
    few, many = resolve_recipe(auto, auto.few_labels - 1), resolve_recipe(auto, auto.few_labels)
    assert (few.class_trains_encoder, few.head_lr_factor) == (True, 1.0)
    assert (many.class_trains_encoder, many.head_lr_factor) == (False, 3.0)
    fixed = resolve_recipe(FinetuneConfig(class_trains_encoder=False, head_lr_factor=2.0), 5)
    assert (fixed.class_trains_encoder, fixed.head_lr_factor) == (False, 2.0)
