"""torch's cross-entropy as the loss tests compare with it, on any device (the CPU tests in losses/ and the
CUDA ones in gpu/ share it)."""

from __future__ import annotations


def torch_ce_tensors(x, y, *, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean", z_loss=0.0):
    """F.cross_entropy (+ z_loss * lse^2 per counted row, same denominator) of tensors x (a leaf that
    requires grad) and int64 y, on any device; returns the loss and x's autograd gradient, as tensors."""
    import torch  # (here, so that a test file may import this module where torch is missing)

    F = torch.nn.functional
    loss = F.cross_entropy(x, y, weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing,
                           reduction=reduction)
    if z_loss:
        counted = (y != ignore_index).to(x.dtype)
        rows = z_loss * torch.logsumexp(x, dim=1) ** 2 * counted
        if reduction == "none":
            loss = loss + rows
        elif reduction == "sum":
            loss = loss + rows.sum()
        else:
            row_weight = counted if weight is None else weight[torch.where(counted > 0, y, 0)] * counted
            loss = loss + rows.sum() / row_weight.sum()
    loss.sum().backward()
    return loss.detach(), x.grad
