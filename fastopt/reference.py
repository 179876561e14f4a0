"""Plain NumPy reference of every optimizer update: the independent witness the C++ kernels are
tested against.

One function per optimizer, written straight from the update formulas (the same rules as
torch.optim's single-tensor, for-loop implementation). Each function is pure: it takes one
parameter array, its gradient and its state arrays, and returns new arrays; the inputs are never
modified. Arithmetic happens in the dtype of the inputs (hyperparameters stay Python floats, so
they never upcast a float32 array). ``step`` is the step number after this update, counting from 1.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

__all__ = ["sgd", "adagrad", "rmsprop", "adam", "adamw"]


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
    step: int = 1,
) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """SGD with optional momentum, dampening, Nesterov momentum and L2 weight decay.

    Returns ``(new_param, new_momentum_buffer)``; when ``momentum == 0`` the buffer is returned
    unchanged (usually None).
    """
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    dx = -grad if maximize else grad
    if weight_decay != 0:
        dx = dx + weight_decay * param  # L2 penalty folded into the gradient

    buf = momentum_buffer
    if momentum != 0:
        if step == 1 or momentum_buffer is None:
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
