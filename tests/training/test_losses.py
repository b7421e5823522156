"""training.losses on hand-made tensors, and gradients through the whole contrastive model."""

from __future__ import annotations

import logging

import torch

from radpair.training.config import load_config
from radpair.training.contrastive import ContrastiveModel
from radpair.training.losses import (
    LearnedWeighting,
    global_triplet_loss,
    info_nce_loss,
    semi_hard_negatives,
    simsiam_loss,
    triplet_terms,
    word_region_loss,
    word_region_scores,
)
from radpair.training.monitor import collapsed, embedding_stats, summarise
from radpair.training.text import clean_report

E = torch.eye(3)


def test_triplet_known_answer():
    # Anchors e0, e1; texts e0 (match), e1. d(pos)=0, d(neg)=1 -> max(0, 0 - 1 + 0.25) = 0.
    assert float(global_triplet_loss(E[:2], E[:2], margin=0.25, k=1)) == 0.0
    # Texts swapped: d(pos)=1, d(neg)=0 -> 1.25 per anchor, image + report anchors -> 2.5.
    loss = global_triplet_loss(E[:2], E[[1, 0]], margin=0.25, k=1)
    assert abs(float(loss) - 2.5) < 1e-6
    # Text at 60 degrees from its image (d=0.5) against an orthogonal negative (d=1): 0.5-1+1=0.5.
    texts = torch.tensor([[0.5, 3**0.5 / 2, 0.0], [0.0, 0.0, 1.0]])
    images = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    d = 1 - torch.nn.functional.normalize(images) @ torch.nn.functional.normalize(texts).T
    assert abs(float(triplet_terms(d, margin=1.0, k=1)[0]) - 0.5) < 1e-5


def test_semi_hard_picks_the_closer_of_two():
    # Anchor 0 has exactly two candidates (1 and 2); 2 is closer, whatever the random draw.
    d = torch.tensor([[0.0, 0.9, 0.2], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        assert int(semi_hard_negatives(d, k=2, generator=g)[0]) == 2


def test_semi_hard_k2_is_random_subset_and_hard_is_global_min():
    n = 8
    d = torch.arange(n * n, dtype=torch.float32).view(n, n)  # column 0 (or 1 for row 0) is the hardest
    hard = semi_hard_negatives(d, k=n - 1, generator=torch.Generator().manual_seed(0))
    assert hard.tolist() == [1] + [0] * (n - 1)
    picks = {int(semi_hard_negatives(d, k=2, generator=torch.Generator().manual_seed(s))[5]) for s in range(30)}
    assert len(picks) > 2 and 5 not in picks  # varied, never the matching pair


def test_location_coefficient_only_on_same_location_negatives():
    d = torch.tensor([[0.5, 0.3], [0.3, 0.5]])  # every term is 0.5 - 0.3 + 0.25 = 0.45
    same = triplet_terms(d, 0.25, 1, locations=torch.tensor([1, 1]), location_coefficient=0.5)
    other = triplet_terms(d, 0.25, 1, locations=torch.tensor([1, 2]), location_coefficient=0.5)
    assert torch.allclose(same, torch.tensor([0.225, 0.225]))
    assert torch.allclose(other, torch.tensor([0.45, 0.45]))


def test_info_nce_prefers_matching_pairs():
    good = info_nce_loss(E, E)
    bad = info_nce_loss(E, E[[1, 2, 0]])
    assert float(good) < 0.01 < float(bad)


def test_a_word_that_matches_a_region_scores_higher_than_one_that_does_not():
    """GLoRIA's word-region score: report 0's word equals a region of image 0 and nothing of image 1."""
    torch.manual_seed(0)
    regions = torch.randn(2, 6, 8)
    words = torch.stack([regions[0, 2:3], torch.randn(1, 8)])  # report 0: region 2 of image 0; report 1: random
    mask = torch.ones(2, 1, dtype=torch.bool)
    scores = word_region_scores(words, mask, regions)
    assert scores.shape == (2, 2)
    assert float(scores[0, 0]) > float(scores[1, 0])  # image 0: its own word beats the random one
    assert float(scores[0, 0]) > float(scores[0, 1])  # report 0's word: image 0 beats image 1


def test_padding_words_do_not_count():
    torch.manual_seed(0)
    regions, words = torch.randn(2, 6, 8), torch.randn(2, 3, 8)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    changed = words.clone()
    changed[0, 2], changed[1, 1:] = 100.0, -100.0
    assert torch.allclose(word_region_scores(words, mask, regions), word_region_scores(changed, mask, regions))


def test_word_region_loss_prefers_aligned_pairs_and_reaches_both_sides():
    torch.manual_seed(0)
    regions = torch.randn(4, 6, 8, requires_grad=True)
    aligned = regions.detach()[:, :3].clone().requires_grad_(True)  # each report names three of its image's regions
    mask = torch.ones(4, 3, dtype=torch.bool)
    good = word_region_loss(aligned, mask, regions)
    bad = word_region_loss(aligned[[1, 2, 3, 0]], mask, regions)
    assert float(good.detach()) < float(bad.detach())
    good.backward()
    assert regions.grad.abs().sum() > 0 and aligned.grad.abs().sum() > 0


def test_simsiam_stops_the_gradient_of_the_target():
    z1, z2 = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    p1, p2 = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8, requires_grad=True)
    simsiam_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None  # reached only through the predictions
    assert p1.grad.abs().sum() > 0 and p2.grad.abs().sum() > 0
    assert abs(float(simsiam_loss(z1, z2, z1, z2)) + float(torch.nn.functional.cosine_similarity(z1, z2).mean())) < 1e-6


def test_collapse_monitor_flags_a_collapsed_batch_and_not_a_healthy_one():
    torch.manual_seed(0)
    healthy = embedding_stats(torch.randn(32, 64))
    assert not collapsed(healthy) and abs(healthy["mean_cosine"]) < 0.1 and healthy["spread"] > 0.8
    one_direction = torch.randn(1, 64) + 0.01 * torch.randn(32, 64)
    stats = embedding_stats(one_direction)
    assert collapsed(stats) and stats["mean_cosine"] > 0.99 and stats["spread"] < 0.1


def test_collapse_summary_tells_a_recovered_run_from_a_collapsed_one(caplog):
    recovered = [{"epoch": 1, "collapsed": True}, {"epoch": 2, "collapsed": True}, {"epoch": 3, "collapsed": False}]
    with caplog.at_level(logging.INFO, logger="radpair.training.monitor"):
        summarise(recovered)
    assert [r.levelno for r in caplog.records] == [logging.INFO] and "recovered" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="radpair.training.monitor"):
        summarise([*recovered, {"epoch": 4, "collapsed": True}])
    assert [r.levelno for r in caplog.records] == [logging.WARNING] and "3 of 4 epochs" in caplog.text
    caplog.clear()
    summarise([{"epoch": 1, "collapsed": False}])
    assert not caplog.records


def test_learned_weighting_has_gradient():
    w = LearnedWeighting(2)
    w([torch.tensor(2.0), torch.tensor(3.0)]).backward()
    assert w.log_vars.grad is not None and torch.all(w.log_vars.grad != 0)


def test_report_cleaning_removes_dates_numbers_punctuation_and_leaks():
    text = "On 2021-03-04: a 23 mm BRAF-fusion-like mass, KIAA1549 negative; V600E? No."
    assert clean_report(text, ("braf", "fusion", "v600e", "kiaa1549")) == "on a mm mass negative no"


def test_gradients_reach_both_encoders_and_learned_weights():
    config = load_config(overrides=[
        "image.depth=10", "image.widths=[8, 16, 32, 64]", "image.region_channels=16", "image.frozen_stages=1",
        "pretrain.embed_dim=16", "text.frozen_layers=4", "text.max_length=16",
    ])
    torch.manual_seed(0)
    model = ContrastiveModel(config)
    images = torch.randn(4, 1, 32, 32, 32)
    text = model.text_encoder.tokenize(["left frontal mass", "cerebellar lesion", "no abnormality", "pons mass"])
    parts = model.loss(model.embed(images, text), torch.tensor([0, 1, 3, 1]), torch.Generator().manual_seed(0))
    assert set(parts) == {"global", "local", "total"}
    parts["local"].backward(retain_graph=True)  # the word-region loss alone reaches both encoders
    assert model.image_encoder.backbone.layer2[0].conv1.weight.grad.abs().sum() > 0
    assert model.text_encoder.model.encoder.layer[5].attention.self.query.weight.grad.abs().sum() > 0
    assert model.image_local.weight.grad.abs().sum() > 0 and model.text_local.weight.grad.abs().sum() > 0
    parts["total"].backward()
    assert model.image_encoder.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert model.image_encoder.backbone.layer1[0].conv1.weight.grad is None  # frozen
    assert model.text_encoder.model.encoder.layer[0].attention.self.query.weight.grad is None  # frozen
    assert model.weighting.log_vars.grad.abs().sum() > 0


def test_frozen_text_encoder_is_encoded_once_with_the_same_output():
    from radpair.training.text import TextEncoder

    reports = ["left frontal mass with cystic component", "cerebellar vermis lesion", "no abnormality", "pons mass"]
    encoder = TextEncoder(frozen_layers=6, max_length=32)
    assert not encoder.trainable
    encoded = encoder.encode_all(reports, batch_size=3).batch([3, 0], torch.device("cpu"))
    encoder.eval()
    with torch.no_grad():
        direct = encoder(encoder.tokenize([reports[3], reports[0]]))
    assert torch.allclose(encoded["global"], direct["global"], atol=1e-5)
    assert torch.equal(encoded["word_mask"], direct["word_mask"])
    mask = direct["word_mask"]
    assert torch.allclose(encoded["local"][mask], direct["local"][mask], atol=1e-5)


def test_batch_norm_projection_spreads_nearly_collinear_features():
    """Pooled ReLU features share a large common component; without centring, the projected
    embeddings stay nearly collinear (every cosine distance ~0, the triplet loss stuck at its margin)."""
    from radpair.training.contrastive import projection

    torch.manual_seed(0)
    features = 5.0 + 0.05 * torch.randn(16, 64)

    def mean_cosine(head: torch.nn.Module) -> float:
        z = torch.nn.functional.normalize(head.train()(features), dim=-1)
        return float((z @ z.T).mean())

    assert mean_cosine(projection(64, 32, batch_norm=False)) > 0.95
    assert mean_cosine(projection(64, 32)) < 0.5
