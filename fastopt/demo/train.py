"""Training a real classifier with fastopt: scikit-learn's bundled digits (8x8 images, 10 classes,
1,797 samples, no download), a linear softmax classifier and a two-layer ReLU network, forward and
backward written by hand in NumPy around fastopt's fused softmax cross-entropy and penalty, the
analytic gradient checked against centered differences before training, then mini-batch training
with each fastopt.optim optimizer under a learning-rate schedule (the notes' recipe: warmup + cosine).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

import fastopt
from fastopt import init, schedules
from fastopt.demo.race import LABELS, OPTIMIZERS

MODELS = ("linear", "mlp")
SCHEDULES = ("warmup-cosine", "cosine", "step", "inverse-sqrt", "linear", "constant")
PENALTIES = ("l2", "elastic", "none")
GRADCHECK_LIMIT = 1e-5  # float64 relative error above which the analytic gradient is wrong

# Base learning rates (the schedule's peak) per optimizer, tuned on this data at the defaults
# (30 epochs, batch 64, warmup + cosine). Override with --lr name=value.
DEFAULT_LRS = dict(sgd=0.2, momentum=0.02, nesterov=0.02, adagrad=0.2, rmsprop=5e-3, adam=1e-2, adamw=1e-2,
                   nadam=1e-2, radam=1e-2, adamax=2e-2, adadelta=1.0, asgd=0.2, rprop=1e-3, lion=1e-3, lamb=1e-2)


class GradcheckError(RuntimeError):
    pass


# ------------------------------------------------------------------------------------------ data
def load_data(val_fraction: float = 0.2, seed: int = 0, dtype=np.float32):
    """Digits split into train and validation (a fixed shuffle), standardised with the training
    set's per-pixel mean and std (pixels that are always 0 keep std 1)."""
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(y))
    n_val = int(round(val_fraction * len(y)))
    val, train = order[:n_val], order[n_val:]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std[std == 0] = 1.0
    X = ((X - mean) / std).astype(dtype)
    y = y.astype(np.int64)
    return X[train], y[train], X[val], y[val]


# ---------------------------------------------------------------------------------------- models
# A model is its parameter list plus loss_grad(params, X, y, l1, l2) -> (loss, grads) and
# predict(params, X) -> scores. Weights are (in, out) for X @ W; the penalty applies to weights only.
def linear_params(n_in: int, n_out: int, rng: np.random.Generator, dtype) -> List[np.ndarray]:
    W = np.zeros((n_in, n_out), dtype)
    init.xavier_normal_(W.T, rng=rng)  # W.T: the (out, in) layout fastopt.init (like torch) expects
    return [W, np.zeros(n_out, dtype)]


def linear_scores(params, X):
    W, b = params
    return X @ W + b


def linear_loss_grad(params, X, y, l1=0.0, l2=0.0):
    W, b = params
    scores = X @ W + b
    # The fused kernel returns the mean loss and d(loss)/d(scores), here written over the scores.
    loss, dscores = fastopt.softmax_cross_entropy(scores, y, out=scores)
    dW = X.T @ dscores
    db = dscores.sum(axis=0)
    loss += fastopt.penalty(W, l1=l1, l2=l2, out_grad=dW)  # adds l1 sign(W) + 2 l2 W into dW
    return float(loss), [dW, db]


def mlp_params(n_in: int, n_hidden: int, n_out: int, rng: np.random.Generator, dtype) -> List[np.ndarray]:
    W1, W2 = np.zeros((n_in, n_hidden), dtype), np.zeros((n_hidden, n_out), dtype)
    init.kaiming_normal_(W1.T, nonlinearity="relu", rng=rng)  # He init: std sqrt(2 / fan_in)
    init.kaiming_normal_(W2.T, nonlinearity="relu", rng=rng)
    return [W1, np.zeros(n_hidden, dtype), W2, np.zeros(n_out, dtype)]


def mlp_scores(params, X):
    W1, b1, W2, b2 = params
    return np.maximum(X @ W1 + b1, 0) @ W2 + b2


def mlp_loss_grad(params, X, y, l1=0.0, l2=0.0):
    W1, b1, W2, b2 = params
    pre = X @ W1 + b1
    hidden = np.maximum(pre, 0)
    scores = hidden @ W2 + b2
    loss, dscores = fastopt.softmax_cross_entropy(scores, y, out=scores)
    dW2 = hidden.T @ dscores
    db2 = dscores.sum(axis=0)
    dhidden = dscores @ W2.T
    dhidden[pre <= 0] = 0            # ReLU passes the gradient only where it was active
    dW1 = X.T @ dhidden
    db1 = dhidden.sum(axis=0)
    loss += fastopt.penalty(W1, l1=l1, l2=l2, out_grad=dW1)
    loss += fastopt.penalty(W2, l1=l1, l2=l2, out_grad=dW2)
    return float(loss), [dW1, db1, dW2, db2]


def mlp_linear_ce_loss_grad(params, X, y, l1=0.0, l2=0.0):
    """mlp_loss_grad with the last layer and the loss in one call: fastopt.linear_cross_entropy (chunk by chunk
    of rows, the scores never whole; it takes the weight in torch.nn.Linear's (out, in) layout)."""
    W1, b1, W2, b2 = params
    pre = X @ W1 + b1
    hidden = np.maximum(pre, 0)
    loss, dhidden, dW2_t, db2 = fastopt.linear_cross_entropy(hidden, np.ascontiguousarray(W2.T), y, bias=b2)
    dW2 = np.ascontiguousarray(dW2_t.T)
    dhidden[pre <= 0] = 0
    dW1 = X.T @ dhidden
    db1 = dhidden.sum(axis=0)
    loss += fastopt.penalty(W1, l1=l1, l2=l2, out_grad=dW1)
    loss += fastopt.penalty(W2, l1=l1, l2=l2, out_grad=dW2)
    return float(loss), [dW1, db1, dW2, db2]


@dataclass
class Model:
    name: str
    make: Callable[[np.random.Generator, type], List[np.ndarray]]
    loss_grad: Callable
    scores: Callable


def make_model(name: str, n_in: int, n_out: int, hidden: int, linear_ce: bool = False) -> Model:
    """linear_ce: the mlp's last layer and loss through fastopt.linear_cross_entropy (same numbers)."""
    if name == "linear":
        return Model("linear", lambda rng, dt: linear_params(n_in, n_out, rng, dt), linear_loss_grad, linear_scores)
    if name == "mlp":
        return Model("mlp", lambda rng, dt: mlp_params(n_in, hidden, n_out, rng, dt),
                     mlp_linear_ce_loss_grad if linear_ce else mlp_loss_grad, mlp_scores)
    raise ValueError(f"unknown model {name!r}")


def model_title(name: str, hidden: int) -> str:
    return "linear softmax classifier" if name == "linear" else f"two-layer ReLU net ({hidden} hidden)"


# ------------------------------------------------------------------------------------ grad check
def check_gradients(model: Model, X, y, l1: float, l2: float, n_samples: int = 16, num_checks: int = 40,
                    seed: int = 0) -> float:
    """Largest relative error, over every parameter array, of the analytic gradient against
    fastopt.gradcheck's centered differences, in float64 on a small batch. Raises GradcheckError
    above GRADCHECK_LIMIT."""
    rng = np.random.default_rng(seed)
    params = model.make(rng, np.float64)
    for p in params:  # biases start at 0; give them values so that their gradient is exercised fully
        if p.ndim == 1:
            p[:] = rng.normal(0, 0.1, p.shape)
    Xs, ys = X[:n_samples].astype(np.float64), y[:n_samples]
    _, grads = model.loss_grad(params, Xs, ys, l1, l2)
    worst = 0.0
    for i, (p, g) in enumerate(zip(params, grads)):
        # f reads params[i] itself, which gradcheck perturbs in place one coordinate at a time.
        err = fastopt.gradcheck(lambda _: model.loss_grad(params, Xs, ys, l1, l2)[0], p, g,
                                num_checks=min(p.size, num_checks), seed=seed + i)
        worst = max(worst, err)
    if not worst <= GRADCHECK_LIMIT:
        raise GradcheckError(f"{model.name}: the analytic gradient disagrees with centered differences: "
                             f"max relative error {worst:.3g} > {GRADCHECK_LIMIT:g}")
    return worst


# ------------------------------------------------------------------------------------- schedules
def make_schedule(kind: str, base_lr: float, total_steps: int):
    """A fastopt.schedules object (or the plain number for "constant") over total_steps updates;
    warmup, where there is one, takes the first 5% of the updates."""
    warmup = min(max(1, total_steps // 20), total_steps - 1)
    if kind == "constant":
        return base_lr
    if kind == "warmup-cosine":
        if warmup < 1:
            return schedules.CosineAnnealing(base_lr=base_lr, T_max=total_steps)
        return schedules.WarmupCosine(base_lr=base_lr, warmup_steps=warmup, total_steps=total_steps)
    if kind == "cosine":
        return schedules.CosineAnnealing(base_lr=base_lr, T_max=total_steps)
    if kind == "step":
        return schedules.StepDecay(base_lr=base_lr, step_size=max(1, total_steps // 3), gamma=0.1)
    if kind == "inverse-sqrt":
        return schedules.InverseSqrt(base_lr=base_lr, warmup_steps=max(warmup, 0))
    if kind == "linear":
        return schedules.Linear(base_lr=base_lr, total_steps=total_steps)
    raise ValueError(f"unknown schedule {kind!r}; one of {', '.join(SCHEDULES)}")


def penalty_strengths(kind: str, l1: Optional[float], l2: Optional[float]) -> Tuple[float, float]:
    """(l1, l2) of fastopt.penalty: L2 1e-4 by default, elastic net adds L1 1e-4."""
    if kind == "none":
        return 0.0, 0.0
    if kind == "l2":
        return 0.0, 1e-4 if l2 is None else l2
    if kind == "elastic":
        return (1e-4 if l1 is None else l1), (1e-4 if l2 is None else l2)
    raise ValueError(f"unknown penalty {kind!r}")


# ---------------------------------------------------------------------------------------- training
@dataclass
class History:
    model: str
    optimizer: str
    lr: float
    caption: str
    train_loss: List[float] = field(default_factory=list)  # mean over each epoch's batches
    val_acc: List[float] = field(default_factory=list)     # after each epoch
    seconds: float = 0.0
    state_dtype: str = ""  # the optimizer's state_dtype= when one was asked for ("" : the default)
    state_bytes: int = 0   # the optimizer's state in memory after training (step counts left out)

    @property
    def label(self) -> str:
        return LABELS[self.optimizer] + (f" {self.state_dtype}" if self.state_dtype else "")


def accuracy(model: Model, params, X, y) -> float:
    return float(np.mean(np.argmax(model.scores(params, X), axis=1) == y))


#: the state precisions of fastopt.optim's state_dtype=, the optimizers --state-dtypes trains in each (those
#: that keep state: plain SGD keeps none; LAMB's per-tensor norms keep float32 only), and those it trains when
#: none are named
STATE_DTYPES = ("float32", "bfloat16", "int8")
STATEFUL_OPTIMIZERS = ("adam", "adamw", "momentum", "nesterov", "adagrad", "rmsprop", "nadam", "radam", "adamax",
                       "adadelta", "asgd", "rprop", "lion")
STATE_DTYPE_OPTIMIZERS = ("adam", "adamw")


def state_dtype_refusal(optimizers) -> Optional[str]:
    """Why --state-dtypes cannot train these optimizers (None when it can: each takes every precision)."""
    refused = [n for n in optimizers if n not in STATEFUL_OPTIMIZERS]
    if refused:
        return (f"--state-dtypes applies to {', '.join(STATEFUL_OPTIMIZERS)} only; leave out "
                f"--optimizers {' '.join(refused)} (or pass --optimizers adam adamw)")
    return None


def state_nbytes(opt) -> int:
    """Bytes of an optimizer's state arrays (float arrays, bfloat16 arrays and fastopt.QuantizedState all
    tell their nbytes; the integer step counts do not count)."""
    return sum(int(getattr(value, "nbytes", 0)) for state in opt.state.values() for value in state.values())


def train_one(model: Model, optimizer: str, lr: float, data, *, epochs: int, batch_size: int, schedule: str,
              l1: float, l2: float, seed: int = 0, caption: str = "", progress=None,
              state_dtype: Optional[str] = None) -> History:
    Xtr, ytr, Xva, yva = data
    rng = np.random.default_rng(seed)  # the same initial weights and batches for every optimizer
    params = model.make(rng, Xtr.dtype.type)
    steps_per_epoch = math.ceil(len(ytr) / batch_size)
    lr_arg = make_schedule(schedule, lr, epochs * steps_per_epoch)
    cls_name, hyper = OPTIMIZERS[optimizer]
    extra = {} if state_dtype is None else dict(state_dtype=state_dtype)
    opt = getattr(fastopt.optim, cls_name)(params, lr=lr_arg, **hyper, **extra)
    history = History(model.name, optimizer, lr, caption, state_dtype=state_dtype or "")
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(ytr))
        total = 0.0
        for k in range(steps_per_epoch):
            batch = order[k * batch_size:(k + 1) * batch_size]
            loss, grads = model.loss_grad(params, Xtr[batch], ytr[batch], l1, l2)
            opt.step(grads)  # one fused fastopt kernel call over the whole parameter list
            total += loss
        history.train_loss.append(total / steps_per_epoch)
        history.val_acc.append(accuracy(model, params, Xva, yva))
        if progress is not None:
            progress.advance()
    history.seconds = time.perf_counter() - start
    history.state_bytes = state_nbytes(opt)
    return history


def table(histories: Sequence[History], hidden: int) -> List[str]:
    """The results per model; with state precisions asked for, the optimizer's state memory too."""
    lines = []
    memory = any(h.state_dtype for h in histories)
    width = 18 if memory else 10
    for name in dict.fromkeys(h.model for h in histories):
        header = (f"{'optimizer':{width}s} {'lr':>8s} {'final loss':>11s} {'val acc %':>10s} {'best %':>7s} "
                  f"{'time':>7s}")
        lines += ["", f"== {model_title(name, hidden)} ==", header + ("  optimizer state" if memory else "")]
        for h in histories:
            if h.model == name:
                line = (f"{h.label:{width}s} {h.lr:8.2g} {h.train_loss[-1]:11.4f} "
                        f"{100 * h.val_acc[-1]:10.2f} {100 * max(h.val_acc):7.2f} {h.seconds:6.2f}s")
                if memory:
                    line += f"  {h.state_bytes / 1024:9.1f} KiB"
                lines.append(line)
    return lines
