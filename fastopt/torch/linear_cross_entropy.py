"""fastopt.torch.linear_cross_entropy: torch.nn.functional.linear_cross_entropy's call, on
fastopt.linear_cross_entropy's chunked loop, as two torch custom ops with an autograd formula, so that it runs
the same in eager mode and inside torch.compile (no graph break: the ops are opaque to the tracer, with fake
implementations that give the shapes).

``fastopt::linear_cross_entropy`` computes the loss and the gradients of input, linear_weight and linear_bias at
once (the chunks are gone after it, so there is nothing to recompute from); autograd keeps the gradients, and
backward scales them by grad_output. For reduction="none" the gradients are those of sum(losses), and backward
is the op ``fastopt::linear_cross_entropy_backward``: a grad_output of equal entries (loss.sum(), loss.mean())
scales them, any other one runs the chunk loop again with each row's dlogits scaled by its entry (a choice
made on grad_output's values, which a traced graph cannot make: hence inside an op).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from fastopt import _linear_cross_entropy as _lce

_HAS_CUSTOM_OP = hasattr(torch.library, "custom_op")  # (torch >= 2.4)
Tensor = torch.Tensor


def _forward(input: Tensor, linear_weight: Tensor, target: Tensor, linear_bias: Optional[Tensor],
             weight: Optional[Tensor], reduction: str, ignore_index: int, label_smoothing: float,
             z_loss: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """(loss, dinput, dweight, dbias): dbias is an empty tensor without a bias (an op returns tensors)."""
    bias = None if linear_bias is None else linear_bias.detach()
    classes = None if weight is None else weight.detach()
    result = _lce.linear_cross_entropy(input.detach(), linear_weight.detach(), target, bias=bias,
                                       weight_classes=classes, ignore_index=ignore_index,
                                       label_smoothing=label_smoothing, reduction=reduction, z_loss=z_loss)
    loss, dinput, dweight = result[:3]
    dbias = result[3] if bias is not None else input.new_empty(0)
    if not isinstance(loss, torch.Tensor):
        loss = torch.tensor(loss, dtype=input.dtype, device=input.device)
    return loss, dinput, dweight, dbias


def _backward(grad_loss: Tensor, dinput: Tensor, dweight: Tensor, dbias: Tensor, input: Tensor,
              linear_weight: Tensor, target: Tensor, linear_bias: Optional[Tensor], weight: Optional[Tensor],
              reduction: str, ignore_index: int, label_smoothing: float,
              z_loss: float) -> Tuple[Tensor, Tensor, Tensor]:
    """The gradients of input, linear_weight and linear_bias (empty without one) for grad_loss."""
    if reduction == "none":
        g = grad_loss.reshape(-1)
        if g.numel() and not bool((g == g[0]).all()):
            hidden, lin_w = input.detach(), linear_weight.detach()
            bias = None if linear_bias is None else linear_bias.detach()
            classes = None if weight is None else weight.detach()
            rows = _lce.default_chunk_rows(hidden.shape[0], lin_w.shape[0], hidden.element_size())
            result = _lce._run(_lce._Torch(torch), hidden, lin_w, target, bias, classes, ignore_index,
                               label_smoothing, "none", z_loss, rows, None, None,
                               row_scale=g.to(hidden.dtype).contiguous())
            return result[1], result[2], result[3] if bias is not None else dbias.new_empty(0)
        scale = g[0] if g.numel() else grad_loss.new_zeros(())
    else:
        scale = grad_loss
    return dinput * scale, dweight * scale, dbias * scale


if _HAS_CUSTOM_OP:
    _forward_op = torch.library.custom_op("fastopt::linear_cross_entropy", mutates_args=())(_forward)
    _backward_op = torch.library.custom_op("fastopt::linear_cross_entropy_backward", mutates_args=())(_backward)

    @_forward_op.register_fake
    def _(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing, z_loss):
        loss = input.new_empty((input.shape[0],) if reduction == "none" else ())
        dbias = input.new_empty(0) if linear_bias is None else torch.empty_like(linear_bias)
        return loss, torch.empty_like(input), torch.empty_like(linear_weight), dbias

    @_backward_op.register_fake
    def _(grad_loss, dinput, dweight, dbias, *rest):
        return torch.empty_like(dinput), torch.empty_like(dweight), torch.empty_like(dbias)

    def _setup_context(ctx, inputs, output):
        input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing, z_loss = inputs
        _, dinput, dweight, dbias = output
        ctx.options = (reduction, ignore_index, label_smoothing, z_loss)
        ctx.has_bias = linear_bias is not None
        ctx.mark_non_differentiable(dinput, dweight, dbias)
        ctx.set_materialize_grads(False)  # (else backward gets zeros the size of the gradients for those outputs)
        ctx.save_for_backward(dinput, dweight, dbias, input, linear_weight, target, linear_bias, weight)

    def _autograd_backward(ctx, grad_loss, *unused):
        dinput, dweight, dbias, input, linear_weight, target, linear_bias, weight = ctx.saved_tensors
        if grad_loss is None:  # (grads are not materialised: an undefined one stands for zeros)
            return (None,) * 9
        if ctx.options[0] == "none":  # (the choice between scaling and a rerun reads grad_loss: in the op)
            d_input, d_weight, d_bias = _backward_op(grad_loss, dinput, dweight, dbias, input, linear_weight,
                                                     target, linear_bias, weight, *ctx.options)
        else:
            d_input, d_weight, d_bias = dinput * grad_loss, dweight * grad_loss, dbias * grad_loss
        need = ctx.needs_input_grad
        return (d_input if need[0] else None, d_weight if need[1] else None, None,
                d_bias if ctx.has_bias and need[3] else None, None, None, None, None, None)

    _forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


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
    gradient. Inside torch.compile the call is the custom op ``fastopt::linear_cross_entropy`` (its backward
    ``fastopt::linear_cross_entropy_backward``): no graph break. Needs torch >= 2.4.
    """
    if not _HAS_CUSTOM_OP:
        raise RuntimeError("fastopt.torch.linear_cross_entropy needs torch >= 2.4 (torch.library.custom_op); this "
                           f"is torch {torch.__version__}")
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(input).__name__}")
    if ignore_index is None:
        ignore_index = -100
    if input.dim() == 1:  # one sample, as torch takes it
        if not isinstance(target, torch.Tensor) or target.dim() != 0:
            raise ValueError("input is 1-d (one sample of D features): target must be a 0-d tensor")
        loss = _forward_op(input.unsqueeze(0), linear_weight, target.reshape(1), linear_bias, weight, reduction,
                           ignore_index, label_smoothing, z_loss)[0]
        return loss.squeeze(0) if reduction == "none" else loss
    return _forward_op(input, linear_weight, target, linear_bias, weight, reduction, ignore_index, label_smoothing,
                       z_loss)[0]
