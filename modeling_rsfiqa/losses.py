"""Quality-regression losses: L1 / MSE, PLCC loss and pairwise rank loss, and their weighted sum.

The PLCC loss is ``(1 - PLCC) / 2`` on the batch (as in Li et al., "Norm-in-Norm", and Q-CLIP);
the rank loss is the pairwise margin-ranking hinge used by many NR-IQA papers (e.g. LIQE, Q-CLIP):
for every pair whose human scores differ, the predicted order should agree. ``pair_mask`` restricts it to
comparable pairs, e.g. the levels of one distortion applied to one source (a within-content severity rank).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["plcc_loss", "rank_loss", "quality_loss", "LOSS_NAMES"]

LOSS_NAMES = ("l1", "mse", "plcc", "rank")


def plcc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(1 - PLCC(pred, target)) / 2`` in [0, 1]; zero for fewer than two samples."""
    pred, target = pred.flatten().float(), target.flatten().float()
    if pred.numel() < 2:
        return pred.sum() * 0.0
    pc, tc = pred - pred.mean(), target - target.mean()
    rho = (pc * tc).sum() / (pc.norm() * tc.norm() + eps)
    return (1.0 - rho) / 2.0


def rank_loss(
    pred: torch.Tensor, target: torch.Tensor, margin: float = 0.0, pair_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean pairwise hinge ``relu(margin - sign(t_i - t_j) * (p_i - p_j))`` over pairs with ``t_i != t_j``.

    ``pair_mask``: optional ``(N, N)`` boolean; only pairs ``(i, j)`` where it is True count (e.g. the same
    source photo and distortion type, so that only the severity order within a content is ranked).
    """
    pred, target = pred.flatten().float(), target.flatten().float()
    if pred.numel() < 2:
        return pred.sum() * 0.0
    dp = pred[:, None] - pred[None, :]
    dt = torch.sign(target[:, None] - target[None, :])
    valid = dt != 0
    if pair_mask is not None:
        if pair_mask.shape != dt.shape:
            raise ValueError(f"pair_mask must have shape {tuple(dt.shape)}, got {tuple(pair_mask.shape)}")
        valid = valid & pair_mask.to(device=valid.device, dtype=torch.bool)
    if not valid.any():
        return pred.sum() * 0.0
    return F.relu(margin - dt * dp)[valid].mean()


def quality_loss(pred: torch.Tensor, target: torch.Tensor, weights: dict[str, float]) -> torch.Tensor:
    """Weighted sum of the losses named in ``weights`` (keys from :data:`LOSS_NAMES`)."""
    unknown = set(weights) - set(LOSS_NAMES)
    if unknown:
        raise ValueError(f"Unknown loss names {sorted(unknown)}; expected a subset of {LOSS_NAMES}")
    pred, target = pred.flatten().float(), target.flatten().float()
    total = pred.sum() * 0.0
    if weights.get("l1"):
        total = total + weights["l1"] * F.l1_loss(pred, target)
    if weights.get("mse"):
        total = total + weights["mse"] * F.mse_loss(pred, target)
    if weights.get("plcc"):
        total = total + weights["plcc"] * plcc_loss(pred, target)
    if weights.get("rank"):
        total = total + weights["rank"] * rank_loss(pred, target)
    return total
