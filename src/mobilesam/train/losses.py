"""SAM's mask losses: focal and dice on mask logits, MSE on the predicted IoU."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0  # SAM: focal 20 : dice 1
DICE_WEIGHT = 1.0


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss averaged over pixels: (N, M, H, W) logits, {0, 1} targets -> (N, M)."""
    probs = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = probs * targets + (1 - probs) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice loss: (N, M, H, W) logits, {0, 1} targets -> (N, M)."""
    probs = logits.sigmoid().flatten(2)
    targets = targets.flatten(2)
    return 1 - (2 * (probs * targets).sum(-1) + eps) / (probs.sum(-1) + targets.sum(-1) + eps)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """IoU of the thresholded masks with the targets: (N, M, H, W) -> (N, M)."""
    pred = (logits > 0).flatten(2)
    gt = targets.flatten(2) > 0.5
    union = (pred | gt).sum(-1)
    return (pred & gt).sum(-1) / union.clamp(min=1)


def sam_loss(
    logits: torch.Tensor, iou_predictions: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SAM's training loss for (N, M, H, W) logits against (N, 1, H, W) targets.

    With several masks per prompt (M = 3) only the best one's mask loss counts,
    as in SAM; the IoU head learns the IoU of every mask.

    Returns:
        The scalar loss, and its parts (focal, dice, iou_mse, iou) for logging;
        `best` holds each prompt's best mask index.
    """
    targets = targets.expand_as(logits)
    focal = focal_loss(logits, targets)
    dice = dice_loss(logits, targets)
    mask_loss = FOCAL_WEIGHT * focal + DICE_WEIGHT * dice  # (N, M)
    best = mask_loss.detach().argmin(dim=1)
    rows = torch.arange(len(best), device=best.device)
    iou = mask_iou(logits.detach(), targets)
    iou_mse = F.mse_loss(iou_predictions.float(), iou)
    loss = mask_loss[rows, best].mean() + iou_mse
    parts = {
        "focal": focal[rows, best].mean(),
        "dice": dice[rows, best].mean(),
        "iou_mse": iou_mse,
        "iou": iou[rows, best].mean(),
        "best": best,
    }
    return loss, parts
