"""The optimizer race of the course notes: seven optimizers start from one point on a 2-D loss
surface and run side by side; who reaches the minimum first, who zigzags, who stalls.

Every step goes through fastopt's kernels: each racer is a ``fastopt.optim`` optimizer over one
2-element float64 array, handed the analytic gradient of the surface at its current point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

import fastopt


# ------------------------------------------------------------------------------------- surfaces
@dataclass(frozen=True)
class Surface:
    """A 2-D test function with its analytic gradient, a start, a known minimum (None for the
    saddle, which has none) and the box drawn in the contour plot."""

    name: str
    title: str
    f: Callable[[float, float], float]  # also called on NumPy grids by the plot
    grad: Callable[[float, float], Tuple[float, float]]
    start: Tuple[float, float]
    minimum: Optional[Tuple[float, float]]
    box: Tuple[float, float, float, float]  # xmin, xmax, ymin, ymax


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x * x) ** 2


def _rosenbrock_grad(x, y):
    return -2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)


def _beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


def _beale_grad(x, y):
    a, b, c = 1.5 - x + x * y, 2.25 - x + x * y ** 2, 2.625 - x + x * y ** 3
    dx = 2 * a * (y - 1) + 2 * b * (y ** 2 - 1) + 2 * c * (y ** 3 - 1)
    dy = 2 * a * x + 2 * b * 2 * x * y + 2 * c * 3 * x * y ** 2
    return dx, dy


# The saddle x^2 - y^2 with the start almost on its stable axis (y = 1e-6): the gradient along y is
# tiny there, so plain gradient descent slides to the saddle point and sits while |y| grows by only
# (1 + 2 lr) a step; an optimizer escapes when |y| reaches 1. It has no minimum (f falls without
# bound along y), so a racer stops once it leaves the plotted box.
def _saddle(x, y):
    return x * x - y * y


def _saddle_grad(x, y):
    return 2 * x, -2 * y


# An elongated quadratic bowl, curvatures 0.1 and 10 (condition number 100), tilted by 30 degrees
# so that the steep and flat directions are not the coordinate axes (per-coordinate scaling, as in
# RMSProp and Adam, then cannot undo the conditioning for free).
_C, _S = math.cos(math.pi / 6), math.sin(math.pi / 6)


def _valley(x, y):
    u, v = _C * x + _S * y, -_S * x + _C * y
    return 0.05 * u * u + 5 * v * v


def _valley_grad(x, y):
    u, v = _C * x + _S * y, -_S * x + _C * y
    du, dv = 0.1 * u, 10 * v
    return _C * du - _S * dv, _S * du + _C * dv


SURFACES: Dict[str, Surface] = {s.name: s for s in (
    Surface("rosenbrock", "Rosenbrock (1-x)² + 100(y-x²)²", _rosenbrock, _rosenbrock_grad,
            (-1.5, 2.0), (1.0, 1.0), (-2.0, 2.0, -1.0, 3.0)),
    Surface("beale", "Beale", _beale, _beale_grad, (1.0, 1.4), (3.0, 0.5), (-0.5, 4.0, -1.5, 2.0)),
    Surface("saddle", "saddle point x² - y²", _saddle, _saddle_grad, (-1.5, 1e-6), None, (-2.0, 2.0, -1.5, 1.5)),
    Surface("valley", "ill-conditioned valley (κ = 100)", _valley, _valley_grad, (-8.0, -3.0), (0.0, 0.0),
            (-9.0, 9.0, -5.0, 5.0)),
)}


# ----------------------------------------------------------------------------------- optimizers
# Racer name -> (fastopt.optim class name, fixed hyperparameters besides lr).
OPTIMIZERS: Dict[str, Tuple[str, dict]] = {
    "sgd": ("SGD", {}),
    "momentum": ("SGD", dict(momentum=0.9)),
    "nesterov": ("SGD", dict(momentum=0.9, nesterov=True)),
    "adagrad": ("Adagrad", {}),
    "rmsprop": ("RMSprop", dict(alpha=0.9)),
    "adam": ("Adam", {}),
    "adamw": ("AdamW", dict(weight_decay=1e-2)),
    # beyond the course notes' seven (fastopt.optim's optimizers described as rules): `--optimizers all`
    "nadam": ("NAdam", {}),
    "radam": ("RAdam", {}),
    "adamax": ("Adamax", {}),
    "adadelta": ("Adadelta", {}),
    "asgd": ("ASGD", {}),
    "rprop": ("Rprop", {}),
    "lion": ("Lion", {}),
    "lamb": ("LAMB", dict(weight_decay=0.0)),
}
LABELS = dict(sgd="SGD", momentum="Momentum", nesterov="Nesterov", adagrad="AdaGrad", rmsprop="RMSProp",
              adam="Adam", adamw="AdamW", nadam="NAdam", radam="RAdam", adamax="Adamax", adadelta="Adadelta",
              asgd="ASGD", rprop="Rprop", lion="Lion", lamb="LAMB")
#: the racers of a run without --optimizers: the course notes' seven (the pictures stay readable)
DEFAULT_RACERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw")

# Learning rates per surface, chosen so that each optimizer does something sensible (no racer
# diverges at these) and the differences the notes describe show: SGD zigzags and crawls, momentum
# overshoots and recovers, the adaptive methods cope with the scales. Override with --lr name=value.
DEFAULT_LRS: Dict[str, Dict[str, float]] = {
    "rosenbrock": dict(sgd=1e-3, momentum=1e-3, nesterov=1e-3, adagrad=0.5, rmsprop=5e-3, adam=0.05, adamw=0.05,
                   nadam=0.03, radam=0.01, adamax=1.0, adadelta=0.3, asgd=1e-3, rprop=0.1, lion=0.01, lamb=0.01),
    "beale": dict(sgd=1e-2, momentum=2e-3, nesterov=2e-3, adagrad=0.5, rmsprop=1e-2, adam=0.05, adamw=0.05,
                   nadam=1.0, radam=0.01, adamax=1.0, adadelta=0.3, asgd=0.03, rprop=0.3, lion=0.01, lamb=0.01),
    "saddle": dict(sgd=0.01, momentum=0.01, nesterov=0.01, adagrad=0.01, rmsprop=0.01, adam=0.01, adamw=0.01,
                   nadam=0.01, radam=0.01, adamax=0.01, adadelta=1.0, asgd=0.01, rprop=0.01, lion=0.01, lamb=0.01),
    "valley": dict(sgd=0.15, momentum=0.02, nesterov=0.02, adagrad=1.0, rmsprop=0.05, adam=0.1, adamw=0.1,
                   nadam=0.3, radam=0.3, adamax=3.0, adadelta=1.0, asgd=0.1, rprop=0.1, lion=0.01, lamb=0.1),
}

TOLERANCE = 1e-2  # "reached the minimum": Euclidean distance to the known minimum below this
ESCAPE = 1.0      # the saddle: "escaped" once |y| >= this
LIMIT = 1e6       # a racer whose coordinates pass this has diverged and stops


@dataclass
class Result:
    surface: str
    optimizer: str
    lr: float
    path: np.ndarray                  # (steps + 1, 2): the start and every point after a step
    losses: np.ndarray                # f at each point of the path
    reached: Optional[int] = None     # first step within TOLERANCE of the minimum (or, saddle: escaped)
    diverged: bool = False

    @property
    def final_loss(self) -> float:
        return float(self.losses[-1])

    @property
    def final_point(self) -> Tuple[float, float]:
        return float(self.path[-1, 0]), float(self.path[-1, 1])


def make_optimizer(name: str, point: np.ndarray, lr: float):
    cls_name, hyper = OPTIMIZERS[name]
    return getattr(fastopt.optim, cls_name)([point], lr=lr, **hyper)


def run_one(surface: Surface, optimizer: str, lr: float, steps: int, tol: float = TOLERANCE) -> Result:
    """`steps` updates from surface.start; the whole path is kept (2 numbers a step)."""
    point = np.array(surface.start, dtype=np.float64)
    grad = np.empty(2, dtype=np.float64)
    opt = make_optimizer(optimizer, point, lr)
    path = np.empty((steps + 1, 2))
    path[0] = point
    reached, diverged, n = None, False, steps
    for t in range(1, steps + 1):
        grad[:] = surface.grad(point[0], point[1])
        opt.step([grad])                 # one fused fastopt kernel call, in place on `point`
        path[t] = point
        if reached is None:
            if surface.minimum is None:
                if abs(point[1]) >= ESCAPE:
                    reached = t
            elif math.hypot(point[0] - surface.minimum[0], point[1] - surface.minimum[1]) < tol:
                reached = t
        if not np.all(np.isfinite(point)) or np.abs(point).max() > LIMIT:
            diverged, n = True, t
            break
        if surface.minimum is None and abs(point[1]) > surface.box[3]:
            n = t                        # down the saddle's open slope and out of the picture
            break
    path = path[:n + 1]
    losses = np.array([surface.f(x, y) for x, y in path])
    return Result(surface.name, optimizer, lr, path, losses, reached, diverged)


def parse_lrs(items: Sequence[str]) -> Dict[str, float]:
    """``["adam=0.1", "sgd=1e-3"]`` -> {"adam": 0.1, "sgd": 0.001}; raises ValueError on bad input."""
    lrs = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lower()
        if not sep or name not in OPTIMIZERS:
            raise ValueError(f"--lr expects NAME=VALUE with NAME one of {', '.join(OPTIMIZERS)}; got {item!r}")
        try:
            lr = float(value)
        except ValueError:
            raise ValueError(f"--lr {item!r}: {value!r} is not a number") from None
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"--lr {item!r}: the learning rate must be > 0")
        lrs[name] = lr
    return lrs


def race(surfaces: Sequence[str], optimizers: Sequence[str], steps: int, lrs: Optional[Dict[str, float]] = None,
         tol: float = TOLERANCE, progress=None) -> List[Result]:
    """Every optimizer on every surface; `lrs` overrides DEFAULT_LRS for the optimizers it names."""
    lrs = lrs or {}
    results = []
    for s in surfaces:
        for o in optimizers:
            if progress is not None:
                progress.set_status(f"race: {LABELS[o]} on {s}")
            results.append(run_one(SURFACES[s], o, lrs.get(o, DEFAULT_LRS[s][o]), steps, tol))
            if progress is not None:
                progress.advance()
    return results


def table(results: Sequence[Result], steps: int, tol: float = TOLERANCE) -> List[str]:
    """One block per surface: lr, steps to reach the minimum ("-" if never), final loss and point."""
    lines = []
    for name in dict.fromkeys(r.surface for r in results):
        surface = SURFACES[name]
        if surface.minimum is None:
            what = f"step |y| >= {ESCAPE:g}"
            head = f"== {surface.title}: no minimum; escape from the saddle point, {steps} steps =="
        else:
            what = "steps to min"
            head = (f"== {surface.title}: minimum {surface.minimum}, start {surface.start}, "
                    f"reached = within {tol:g} of it, {steps} steps ==")
        lines += ["", head, f"{'optimizer':10s} {'lr':>8s} {what:>14s} {'final loss':>12s}   final point"]
        for r in results:
            if r.surface != name:
                continue
            reached = str(r.reached) if r.reached is not None else "-"
            note = "  diverged" if r.diverged else ""
            x, y = r.final_point
            lines.append(f"{LABELS[r.optimizer]:10s} {r.lr:8.2g} {reached:>14s} {r.final_loss:12.4g}   "
                         f"({x:.4g}, {y:.4g}){note}")
    return lines
