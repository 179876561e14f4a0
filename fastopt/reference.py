"""Plain NumPy reference of every optimizer update: the independent witness the C++ kernels are
tested against.

One function per optimizer, written straight from the update formulas (the same rules as
torch.optim's single-tensor, for-loop implementation). The losses (``softmax``, ``log_softmax``,
``softmax_cross_entropy``, ``multiclass_svm_loss``, ``penalty``) follow, written from the course
notes' formulas; each returns the loss together with its analytic gradient. Every function is pure:
an optimizer takes one parameter array, its gradient and its state arrays, and returns new arrays,
and a loss returns new arrays too; the inputs are never modified. Arithmetic happens in the dtype
of the inputs (hyperparameters stay Python floats, so they never upcast a float32 array). ``step``
is the step number after this update, counting from 1.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

__all__ = [
    "sgd",
    "adagrad",
    "rmsprop",
    "adam",
    "adamw",
    "softmax",
    "log_softmax",
    "softmax_cross_entropy",
    "multiclass_svm_loss",
    "penalty",
]


def sgd(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: Optional[np.ndarray] = None,
    *,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    maximize: bool = False,
    step: Optional[int] = None,
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """SGD with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    Returns ``(new_param, new_momentum_buffer)``; when ``momentum == 0`` the buffer is returned
    unchanged (usually None). The first step with momentum starts the buffer from the gradient: the
    step where ``momentum_buffer`` is None (as torch keeps it), or ``step == 1`` when a step is given.
    """
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    dx = -grad if maximize else grad
    if weight_decay != 0:
        dx = dx + weight_decay * param  # L2 penalty folded into the gradient

    buf = momentum_buffer
    if momentum != 0:
        first_step = momentum_buffer is None if step is None else step == 1
        if first_step:
            buf = dx.copy()  # first step: the velocity starts as the gradient itself
        else:
            buf = momentum * momentum_buffer + (1 - dampening) * dx  # v = mu * v + (1 - damp) * dx
        if nesterov:
            dx = dx + momentum * buf  # look ahead along the velocity
        else:
            dx = buf

    new_param = param - lr * dx
    return new_param, buf


def adagrad(
    param: np.ndarray,
    grad: np.ndarray,
    state_sum: np.ndarray,
    *,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    maximize: bool = False,
    step: int,
) -> Tuple[np.ndarray, np.ndarray]:
    """Adagrad: per-parameter step sizes from the running sum of squared gradients.

    Returns ``(new_param, new_state_sum)``.
    """
    dx = -grad if maximize else grad
    if weight_decay != 0:
        dx = dx + weight_decay * param  # L2 penalty folded into the gradient

    clr = lr / (1 + (step - 1) * lr_decay)  # decayed learning rate
    new_sum = state_sum + dx * dx  # grad_squared += dx * dx
    new_param = param - clr * dx / (np.sqrt(new_sum) + eps)
    return new_param, new_sum


def rmsprop(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    momentum_buffer: Optional[np.ndarray] = None,
    grad_avg: Optional[np.ndarray] = None,
    *,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    maximize: bool = False,
) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
    """RMSprop, optionally centered and with momentum.

    ``momentum_buffer`` is needed when ``momentum > 0`` and ``grad_avg`` when ``centered``; both
    start at zeros. Returns ``(new_param, new_square_avg, new_momentum_buffer, new_grad_avg)``,
    where a state that is not used is returned unchanged (usually None).
    """
    dx = -grad if maximize else grad
    if weight_decay != 0:
        dx = dx + weight_decay * param  # L2 penalty folded into the gradient

    # grad_squared = decay_rate * grad_squared + (1 - decay_rate) * dx * dx
    new_square_avg = alpha * square_avg + (1 - alpha) * dx * dx

    new_grad_avg = grad_avg
    if centered:
        new_grad_avg = alpha * grad_avg + (1 - alpha) * dx  # running mean of the gradient
        avg = np.sqrt(new_square_avg - new_grad_avg * new_grad_avg)  # running std of the gradient
    else:
        avg = np.sqrt(new_square_avg)
    avg = avg + eps

    new_buf = momentum_buffer
    if momentum > 0:
        new_buf = momentum * momentum_buffer + dx / avg  # velocity of the scaled gradient
        new_param = param - lr * new_buf
    else:
        new_param = param - lr * dx / avg
    return new_param, new_square_avg, new_buf, new_grad_avg


def _adam_update(param, dx, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, amsgrad, step):
    """The part Adam and AdamW share: moments, bias correction and the parameter step."""
    first_moment = beta1 * exp_avg + (1 - beta1) * dx  # momentum
    second_moment = beta2 * exp_avg_sq + (1 - beta2) * dx * dx  # RMSProp-style squared average

    new_max = max_exp_avg_sq
    if amsgrad:
        new_max = np.maximum(max_exp_avg_sq, second_moment)  # never let the second moment shrink
        v = new_max
    else:
        v = second_moment

    bias_correction1 = 1 - beta1**step  # moments start at zero: unbias them
    bias_correction2 = 1 - beta2**step
    denom = np.sqrt(v) / math.sqrt(bias_correction2) + eps  # sqrt(second_unbias) + eps
    new_param = param - (lr / bias_correction1) * first_moment / denom  # lr * first_unbias / denom
    return new_param, first_moment, second_moment, new_max


def adam(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: Optional[np.ndarray] = None,
    *,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    maximize: bool = False,
    step: int,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """Adam with L2 weight decay (added to the gradient) and optional AMSGrad.

    ``max_exp_avg_sq`` is needed when ``amsgrad``. Returns
    ``(new_param, new_exp_avg, new_exp_avg_sq, new_max_exp_avg_sq)``.
    """
    dx = -grad if maximize else grad
    if weight_decay != 0:
        dx = dx + weight_decay * param  # coupled L2 penalty
    return _adam_update(param, dx, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, amsgrad, step)


def adamw(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    max_exp_avg_sq: Optional[np.ndarray] = None,
    *,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-2,
    amsgrad: bool = False,
    maximize: bool = False,
    step: int,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """AdamW: Adam with decoupled weight decay (the parameter shrinks; the gradient is untouched).

    Same arguments and return value as :func:`adam`.
    """
    dx = -grad if maximize else grad
    if weight_decay != 0:
        param = param * (1 - lr * weight_decay)  # decoupled decay, before the Adam step
    return _adam_update(param, dx, exp_avg, exp_avg_sq, max_exp_avg_sq, lr, beta1, beta2, eps, amsgrad, step)


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------

_REDUCTIONS = ("mean", "sum", "none")


def _as_float_array(x) -> np.ndarray:
    """``x`` as an array; integer or boolean input becomes float64, floating input keeps its dtype."""
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float64)
    return x


def _check_labels(labels, n: int, n_classes: int, ignore_index: Optional[int] = None) -> np.ndarray:
    """``labels`` as an (n,) integer array; IndexError names the first row whose label is invalid."""
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got {labels.dtype}")
    bad = (labels < 0) | (labels >= n_classes)
    if ignore_index is not None:
        bad &= labels != ignore_index
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise IndexError(f"label {int(labels[i])} of row {i} is outside [0, {n_classes})")
    return labels


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log of the softmax over the last axis: ``log p_k = s_k - log sum_j e^{s_j}``, computed stably.

    Any ndim >= 1. A ``-inf`` score gives ``-inf`` (probability 0); a row that is all ``-inf`` gives
    NaN.
    """
    x = _as_float_array(x)
    if x.ndim < 1:
        raise ValueError("log_softmax needs at least one axis")
    if x.shape[-1] == 0:
        return x.copy()  # no classes: nothing to normalise
    with np.errstate(invalid="ignore"):  # an all -inf row: -inf - (-inf) = nan, left as is
        shifted = x - np.max(x, axis=-1, keepdims=True)  # s'_k = s_k - max_j s_j: largest exponent is e^0 = 1
    log_norm = np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))  # log sum_j e^{s'_j}
    return shifted - log_norm  # log p_k = s'_k - log sum_j e^{s'_j}


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis: ``p_k = e^{s_k} / sum_j e^{s_j}``, computed stably.

    Any ndim >= 1. A ``-inf`` score gives probability 0; a row that is all ``-inf`` gives NaN.
    """
    x = _as_float_array(x)
    if x.ndim < 1:
        raise ValueError("softmax needs at least one axis")
    if x.shape[-1] == 0:
        return x.copy()  # no classes: nothing to normalise
    with np.errstate(invalid="ignore"):  # an all -inf row: -inf - (-inf) = nan, left as is
        shifted = x - np.max(x, axis=-1, keepdims=True)  # the max cancels in the ratio
    e = np.exp(shifted)  # unnormalized probabilities, each <= 1
    return e / np.sum(e, axis=-1, keepdims=True)  # normalize: the row sums to 1


def softmax_cross_entropy(
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    weight: Optional[np.ndarray] = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    z_loss: float = 0.0,
):
    """Softmax cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,), and its gradient.

    The same numbers as ``torch.nn.functional.cross_entropy`` (class weights, ``ignore_index``,
    ``label_smoothing``, reduction), plus an optional z-loss ``z_loss * logsumexp(logits_i)**2`` per
    counted row. For a counted row i (``labels[i] != ignore_index``), with ``logp`` its log-softmax,
    ``y`` its label, ``w`` the class weights (ones when None), ``W = sum(w)`` and ``eps`` the label
    smoothing::

        loss_i = (1 - eps) * w[y] * (-logp[y]) + (eps / C) * sum_c w[c] * (-logp[c]) + z_loss * lse_i**2

    (the smoothing term is skipped when ``eps == 0``, the z term when ``z_loss == 0``). Ignored rows
    have loss 0 and gradient 0. ``"mean"`` divides the sum of ``loss_i`` by ``D = sum of w[labels[i]]``
    over the counted rows (torch's weighted mean; the z term is divided by the same D; D = 0 gives
    NaN), ``"sum"`` sums, ``"none"`` keeps the (N,) per-row losses.

    Returns ``(loss, dlogits)``: loss a Python float (``"mean"``, ``"sum"``) or an (N,) array
    (``"none"``); ``dlogits`` (N, C) is the gradient of the returned loss (for ``"none"``, of the
    sum of the per-row losses). Both arrays have the dtype of ``logits``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    logits = _as_float_array(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {logits.shape}")
    n, n_classes = logits.shape
    if n_classes == 0:
        raise ValueError("logits need at least one class")
    labels = _check_labels(labels, n, n_classes, ignore_index)
    dtype = logits.dtype
    if weight is None:
        w = np.ones(n_classes, dtype=dtype)
    else:
        w = np.asarray(weight, dtype=dtype)
        if w.shape != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},), got {w.shape}")
    eps = float(label_smoothing)
    z_loss = float(z_loss)

    rows = np.flatnonzero(labels != ignore_index)  # the counted rows
    y = labels[rows]
    idx = np.arange(rows.size)
    scores = logits[rows]  # a copy: the input is never touched

    with np.errstate(invalid="ignore"):  # an all -inf row: nan, left as is
        m = np.max(scores, axis=1, keepdims=True)
        shifted = scores - m  # s'_j = s_j - max_j s_j
    sumexp = np.sum(np.exp(shifted), axis=1, keepdims=True)  # sum_j e^{s'_j}
    logp = shifted - np.log(sumexp)  # log p_j = s'_j - log sum_j e^{s'_j}
    p = np.exp(shifted) / sumexp  # p_j = e^{s'_j} / sum_j e^{s'_j}
    w_y = w[y]

    loss_rows = (1 - eps) * w_y * (-logp[idx, y])  # L_i = -log p_{y_i}, weighted by the class weight
    coef = (1 - eps) * w_y  # d(-logp_y)/ds_j = p_j - [j == y]: the part multiplying p_j
    if eps != 0:
        smooth = np.sum(w * (-logp), axis=1)  # sum_c w_c (-log p_c): eps spread over all classes
        loss_rows = loss_rows + (eps / n_classes) * smooth
        coef = coef + (eps / n_classes) * np.sum(w)  # sum_c w_c (p_j - [j == c]) = W p_j - w_j
    if z_loss != 0:
        lse = m[:, 0] + np.log(sumexp[:, 0])  # log sum_j e^{s_j} = max + log sum_j e^{s'_j}
        loss_rows = loss_rows + z_loss * lse**2  # z-loss keeps the normalizer near 0
        coef = coef + 2 * z_loss * lse  # d(lse^2)/ds_j = 2 lse p_j

    grad_rows = p * coef[:, None]
    grad_rows[idx, y] -= (1 - eps) * w_y  # the -[j == y] of the target term
    if eps != 0:
        grad_rows -= (eps / n_classes) * w  # the -w_j of the smoothing term

    dlogits = np.zeros((n, n_classes), dtype=dtype)
    if reduction == "none":
        loss = np.zeros(n, dtype=dtype)
        loss[rows] = loss_rows
        dlogits[rows] = grad_rows
        return loss, dlogits
    if reduction == "sum":
        dlogits[rows] = grad_rows
        return float(np.sum(loss_rows)), dlogits
    denom = np.sum(w_y)  # D: the weighted count of counted rows, as torch's mean divides
    with np.errstate(invalid="ignore", divide="ignore"):  # D = 0: nan, as in torch
        loss = np.sum(loss_rows) / denom  # L = (1/D) sum_i L_i
        dlogits[rows] = grad_rows / denom
    return float(loss), dlogits


def multiclass_svm_loss(
    scores: np.ndarray, labels: np.ndarray, *, margin: float = 1.0, reduction: str = "mean"
):
    """Multiclass SVM (hinge) loss of ``scores`` (N, C) against integer ``labels`` (N,), and its gradient.

    ``L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + margin)``; ``"mean"`` averages over the N examples,
    ``"sum"`` sums, ``"none"`` keeps the (N,) per-example losses. Returns ``(loss, dscores)``: loss a
    Python float (``"mean"``, ``"sum"``) or an (N,) array (``"none"``); ``dscores`` is the gradient of
    the returned loss (for ``"none"``, of the sum), taking the hinge's slope at 0 as 0. Unlike
    ``torch.nn.functional.multi_margin_loss``, there is no division by C.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    scores = _as_float_array(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (N, C), got {scores.shape}")
    n, n_classes = scores.shape
    labels = _check_labels(labels, n, n_classes)
    idx = np.arange(n)

    correct = scores[idx, labels][:, None]  # s_{y_i}
    margins = scores - correct + margin  # s_j - s_{y_i} + Delta
    margins[idx, labels] = 0  # the sum skips j == y_i
    losses = np.sum(np.maximum(0, margins), axis=1)  # L_i = sum_{j != y_i} max(0, s_j - s_{y_i} + Delta)

    active = margins > 0  # the terms that contribute (strictly inside the margin)
    dscores = active.astype(scores.dtype)  # dL_i/ds_j = 1 for each active j != y_i
    dscores[idx, labels] = -np.sum(active, axis=1)  # dL_i/ds_{y_i} = -(number of active j)

    if reduction == "none":
        return losses, dscores
    if reduction == "sum":
        return float(np.sum(losses)), dscores
    with np.errstate(invalid="ignore", divide="ignore"):  # N = 0: nan
        loss = np.sum(losses) / scores.dtype.type(n)  # L = (1/N) sum_i L_i
        dscores = dscores / scores.dtype.type(n)
    return float(loss), dscores


def penalty(w: np.ndarray, *, l1: float = 0.0, l2: float = 0.0):
    """Elastic-net regularization ``R(W) = l1 * sum|W| + l2 * sum W^2`` and its gradient.

    Returns ``(value, grad)``: value a Python float, ``grad = l1 * sign(W) + 2 * l2 * W`` (sign(0) = 0)
    in the dtype of ``w``. (The C++ version adds the gradient into a caller's buffer.)
    """
    w = _as_float_array(w)
    value = l1 * np.sum(np.abs(w)) + l2 * np.sum(w * w)  # R(W) = l1 sum |W_ij| + l2 sum W_ij^2
    grad = l1 * np.sign(w) + 2 * l2 * w  # dR/dW = l1 sign(W) + 2 l2 W
    return float(value), grad
