"""Quality losses: PLCC loss, pairwise rank loss and their weighted sum."""

from __future__ import annotations

import pytest
import torch

from modeling_rsfiqa.losses import LOSS_NAMES, plcc_loss, quality_loss, rank_loss

TARGET = torch.tensor([1.0, 2.0, 3.5, 4.0, 5.0])


def test_plcc_loss_values():
    assert plcc_loss(2 * TARGET + 7, TARGET).item() == pytest.approx(0.0, abs=1e-6)
    assert plcc_loss(-TARGET, TARGET).item() == pytest.approx(1.0, abs=1e-6)
    assert plcc_loss(torch.tensor([3.0]), torch.tensor([1.0])).item() == 0.0


def test_rank_loss_zero_when_ordered_and_positive_otherwise():
    assert rank_loss(TARGET * 0.1, TARGET).item() == 0.0
    assert rank_loss(TARGET.flip(0), TARGET).item() > 0.0
    # with a margin, correctly ordered but too-close pairs are penalised
    assert rank_loss(TARGET * 1e-3, TARGET, margin=0.5).item() > 0.0
    # ties in the target contribute nothing
    assert rank_loss(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 2.0])).item() == 0.0


def test_quality_loss_weights_combine_linearly():
    pred = torch.tensor([1.5, 1.0, 3.0, 4.5, 4.0])
    parts = {
        "l1": torch.nn.functional.l1_loss(pred, TARGET),
        "mse": torch.nn.functional.mse_loss(pred, TARGET),
        "plcc": plcc_loss(pred, TARGET),
        "rank": rank_loss(pred, TARGET),
    }
    assert set(parts) == set(LOSS_NAMES)
    weights = {"l1": 0.5, "mse": 2.0, "plcc": 1.0, "rank": 0.3}
    expected = sum(w * parts[k] for k, w in weights.items())
    assert quality_loss(pred, TARGET, weights).item() == pytest.approx(expected.item(), rel=1e-6)
    assert quality_loss(pred, TARGET, {"mse": 1.0}).item() == pytest.approx(parts["mse"].item())
    assert quality_loss(pred, TARGET, {"mse": 0.0}).item() == 0.0
    with pytest.raises(ValueError, match="Unknown loss"):
        quality_loss(pred, TARGET, {"huber": 1.0})


def test_quality_loss_is_differentiable():
    pred = torch.tensor([1.5, 1.0, 3.0, 4.5, 4.0], requires_grad=True)
    quality_loss(pred, TARGET, {"l1": 1.0, "plcc": 1.0, "rank": 1.0}).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_rank_loss_pair_mask_counts_only_the_masked_pairs():
    # two groups {0, 1} and {2, 3}: each ordered within itself, but group 2 sits below group 1 overall
    pred = torch.tensor([1.0, 2.0, -1.0, 0.0])
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    group = torch.tensor([0, 0, 1, 1])
    mask = group[:, None] == group[None, :]
    assert rank_loss(pred, target).item() > 0.0
    assert rank_loss(pred, target, pair_mask=mask).item() == 0.0
    # a mis-ordered pair inside a group: the mean runs over the 4 masked ordered pairs (both directions)
    swapped = torch.tensor([2.0, 1.0, -1.0, 0.0])
    assert rank_loss(swapped, target, pair_mask=mask).item() == pytest.approx(2 * 1.0 / 4)
    assert rank_loss(pred, target, pair_mask=torch.zeros(4, 4, dtype=torch.bool)).item() == 0.0
    with pytest.raises(ValueError, match="pair_mask"):
        rank_loss(pred, target, pair_mask=mask[:3, :3])
