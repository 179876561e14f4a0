"""fastopt.torch.linear_cross_entropy: torch.nn.functional.linear_cross_entropy's call, on
fastopt.linear_cross_entropy's chunked loop, as a torch.autograd.Function.

The forward pass computes the loss and the gradients of input, linear_weight and linear_bias at once (the
chunks are gone after it, so there is nothing to recompute from); backward scales them by grad_output. For
reduction="none" the saved gradients are those of sum(losses): a grad_output of equal entries (loss.sum(),
loss.mean()) scales them, any other one runs the chunk loop again with each row's dlogits scaled by its entry.
"""

from __future__ import annotations

from typing import Optional

import torch

from fastopt import _linear_cross_entropy as _lce


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing,
                z_loss):
        hidden, lin_w = input.detach(), linear_weight.detach()
        bias = None if linear_bias is None else linear_bias.detach()
        classes = None if weight is None else weight.detach()
        result = _lce.linear_cross_entropy(hidden, lin_w, target, bias=bias, weight_classes=classes,
                                           ignore_index=ignore_index, label_smoothing=label_smoothing,
                                           reduction=reduction, z_loss=z_loss)
        loss, dinput, dweight = result[:3]
        dbias = result[3] if bias is not None else None
        if not isinstance(loss, torch.Tensor):
            loss = torch.tensor(loss, dtype=input.dtype, device=input.device)
        ctx.reduction = reduction
        ctx.args = (ignore_index, label_smoothing, z_loss)
        ctx.has_bias = bias is not None
        if reduction == "none":  # kept for a non-uniform grad_output (the inputs themselves: no copies)
            ctx.save_for_backward(dinput, dweight, dbias, hidden, lin_w, target, bias, classes)
        else:
            ctx.save_for_backward(dinput, dweight, dbias)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        saved = ctx.saved_tensors
        dinput, dweight, dbias = saved[:3]
        if ctx.reduction == "none":
            g = grad_output.reshape(-1)
            if g.numel() and not bool((g == g[0]).all()):
                hidden, lin_w, target, bias, classes = saved[3:]
                ignore_index, label_smoothing, z_loss = ctx.args
                result = _lce._run(_lce._Torch(torch), hidden, lin_w, target, bias, classes, ignore_index,
                                   label_smoothing, "none", z_loss, _lce.default_chunk_rows(
                                       hidden.shape[0], lin_w.shape[0], hidden.element_size()),
                                   None, None, row_scale=g.to(hidden.dtype).contiguous())
                grads = result[1:3] + ((result[3],) if ctx.has_bias else (None,))
                return _outputs(ctx, grads)
            scale = g[0] if g.numel() else grad_output.new_zeros(())
        else:
            scale = grad_output
        grads = tuple(None if t is None else t * scale for t in (dinput, dweight, dbias))
        return _outputs(ctx, grads)


def _outputs(ctx, grads):
    need = ctx.needs_input_grad
    dinput, dweight, dbias = grads
    return (dinput if need[0] else None, dweight if need[1] else None, None, dbias if need[3] else None,
            None, None, None, None, None)


def linear_cross_entropy(input: torch.Tensor, linear_weight: torch.Tensor, target: torch.Tensor, *,
                         linear_bias: Optional[torch.Tensor] = None, weight: Optional[torch.Tensor] = None,
                         reduction: str = "mean", ignore_index: Optional[int] = None, label_smoothing: float = 0.0,
                         z_loss: float = 0.0) -> torch.Tensor:
    """``torch.nn.functional.linear_cross_entropy(input, linear_weight, target, linear_bias=..., weight=...,
    reduction=..., ignore_index=..., label_smoothing=...)``'s numbers and gradients (for input, linear_weight
    and linear_bias), computed chunk by chunk of rows by :func:`fastopt.linear_cross_entropy`: the (N, V)
    logits never exist, in the forward pass or the backward one.

    input (N, D) or (D,) (then target is 0-d), linear_weight (V, D), target (N,) int64/int32 class indices,
    float32/float64 tensors on one device. ignore_index None means -100, as in torch. z_loss adds
    ``z_loss * logsumexp(logits_row)**2`` per counted row (fastopt's extra; 0 by default). torch's ``options``
    (its chunking choices) has no counterpart: fastopt always chunks. The gradients are computed in the
    forward pass and kept until backward (memory of input's and linear_weight's size); class weights get no
    gradient.
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if ignore_index is None:
        ignore_index = -100
    if input.dim() == 1:  # one sample, as torch takes it
        if not isinstance(target, torch.Tensor) or target.dim() != 0:
            raise ValueError("input is 1-d (one sample of D features): target must be a 0-d tensor")
        loss = _LinearCrossEntropy.apply(input.unsqueeze(0), linear_weight, target.reshape(1), linear_bias, weight,
                                         reduction, ignore_index, label_smoothing, z_loss)
        return loss.squeeze(0) if reduction == "none" else loss
    return _LinearCrossEntropy.apply(input, linear_weight, target, linear_bias, weight, reduction, ignore_index,
                                     label_smoothing, z_loss)
