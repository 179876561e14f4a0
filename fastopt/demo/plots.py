"""The demo's pictures, drawn with matplotlib's Agg backend (no display needed): the race's contour
plots with every optimizer's path above its progress per step, and the training curves. matplotlib is
the `demo` extra; the command line checks for it before any work starts (fastopt.demo.require).

Seven optimizers often take nearly the same path (Adam and AdamW; SGD, Momentum and Nesterov at
matched effective learning rates), so each has its own colour, line style and marker, and the lines
are drawn widest first, narrowest last: where paths coincide they show as nested stripes rather than
the last one hiding the others.
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np

# One style per optimizer, the same in every picture (and in the animated race).
STYLES = {
    "sgd": dict(color="#d62728", ls="-", marker="o"),
    "momentum": dict(color="#1f77b4", ls="--", marker="s"),
    "nesterov": dict(color="#17becf", ls=":", marker="^"),
    "adagrad": dict(color="#8c564b", ls="-.", marker="v"),
    "rmsprop": dict(color="#2ca02c", ls="-", marker="D"),
    "adam": dict(color="#ff7f0e", ls="-", marker="P"),
    "adamw": dict(color="#7b2cbf", ls="--", marker="X"),
    "nadam": dict(color="#e377c2", ls="-", marker="*"),
    "radam": dict(color="#bcbd22", ls="--", marker="p"),
    "adamax": dict(color="#9467bd", ls=":", marker="h"),
    "adadelta": dict(color="#7f7f7f", ls="-.", marker="<"),
    "asgd": dict(color="#393b79", ls="-", marker=">"),
    "rprop": dict(color="#637939", ls="--", marker="d"),
    "lion": dict(color="#843c39", ls=":", marker="8"),
    "lamb": dict(color="#e7ba52", ls="-.", marker="H"),
}
ORDER = list(STYLES)
COLORS = {name: s["color"] for name, s in STYLES.items()}


def width(name: str, widest: float = 5.0, narrowest: float = 1.4) -> float:
    """Line width: the first optimizer widest, the last narrowest (drawn in that order)."""
    i = ORDER.index(name) if name in ORDER else len(ORDER) - 1
    return widest - (widest - narrowest) * i / (len(ORDER) - 1)


def line_style(name: str, n_points: int, markers: int = 8, **extra) -> dict:
    """Keyword arguments of ax.plot for optimizer `name` over a line of n_points points: its colour,
    line style, width, and `markers` markers spaced evenly in steps (so their spacing shows speed)."""
    s = STYLES[name]
    return dict(color=s["color"], ls=s["ls"], lw=width(name), marker=s["marker"], ms=6.5, mec="k", mew=0.6,
                markevery=max(1, n_points // markers), zorder=2 + ORDER.index(name) * 0.1, **extra)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: never look for a display
    import matplotlib.pyplot as plt

    return plt


def legend_handles(names: Sequence[str]):
    """Legend entries for the optimizers: their line, style and marker."""
    from matplotlib.lines import Line2D

    from fastopt.demo.race import LABELS

    return ([Line2D([], [], color=STYLES[n]["color"], ls=STYLES[n]["ls"], lw=2.4, marker=STYLES[n]["marker"], ms=8,
                    mec="k", mew=0.6) for n in names], [LABELS[n] for n in names])


def draw_surface(ax, s, grid: int = 300, fast: bool = False) -> None:
    """The contour background of surface s, its start (white circle) and minimum (gold star). fast:
    the same bands as one image (quick to redraw, for the animation) instead of filled contours."""
    x0, x1, y0, y1 = s.box
    X, Y = np.meshgrid(np.linspace(x0, x1, grid), np.linspace(y0, y1, grid))
    Z = s.f(X, Y)
    if s.minimum is not None:  # minimum 0: log-spaced levels show the valley floor as well as the walls
        Z = np.log10(Z + 1e-3)
    if fast:
        bands = np.floor(20 * (Z - Z.min()) / (Z.max() - Z.min() + 1e-300))
        ax.imshow(bands, extent=(x0, x1, y0, y1), origin="lower", cmap="Greys_r", alpha=0.45, aspect="auto",
                  interpolation="nearest")
    else:
        ax.contourf(X, Y, Z, levels=20, cmap="Greys_r", alpha=0.45)
    if s.minimum is None:  # the saddle: its zero level, the two lines through the saddle point
        ax.contour(X, Y, Z, levels=[0.0], colors="k", linewidths=0.6)
    else:
        ax.plot(*s.minimum, marker="*", color="gold", ms=20, mec="k", zorder=9)
    ax.plot(*s.start, marker="o", color="k", mfc="white", ms=10, zorder=9)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title(s.title, fontsize=13)


def progress(result, surface) -> np.ndarray:
    """Distance to the minimum after each step (the saddle: |y|, the distance travelled off the ridge)."""
    if surface.minimum is None:
        return np.abs(result.path[:, 1])
    return np.hypot(result.path[:, 0] - surface.minimum[0], result.path[:, 1] - surface.minimum[1])


def race_figure(results: Sequence, surfaces: Dict, path: str, dpi: int = 80, tol: float = 1e-2) -> str:
    """Per surface a row: the contour plot with every racer's path (markers every tenth of the steps;
    start ○, minimum ★), and beside it each racer's distance to the minimum per step (log scale), whose
    legend gives lr and the step it came within `tol` ("-": never)."""
    from fastopt.demo.race import ESCAPE, LABELS

    plt = pyplot()
    names = list(dict.fromkeys(r.surface for r in results))
    racers = [n for n in ORDER if any(r.optimizer == n for r in results)]
    height = 4.6 * len(names) + 1.3
    fig, axes = plt.subplots(len(names), 2, figsize=(14, height), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.15]})
    for (ax, ax_p), name in zip(axes, names):
        s = surfaces[name]
        draw_surface(ax, s)
        mine = sorted((r for r in results if r.surface == name), key=lambda r: ORDER.index(r.optimizer))
        steps = max(len(r.path) for r in mine) - 1
        every = max(1, steps // 10)
        for r in mine:
            ax.plot(r.path[:, 0], r.path[:, 1], **{**line_style(r.optimizer, len(r.path)), "markevery": every})
            d = progress(r, s)
            reached = "-" if r.reached is None else f"{r.reached:,}"
            ax_p.plot(np.arange(len(d)), np.maximum(d, 1e-300),  # exactly 0 leaves through the bottom
                      **{**line_style(r.optimizer, len(d)), "markevery": every, "ms": 5.5},
                      label=f"{LABELS[r.optimizer]} ({r.lr:g}): {reached}")
        ax_p.set_yscale("log")
        ax_p.set_ylim(max(ax_p.get_ylim()[0], 1e-12), None)  # below 1e-12: float64 round-off, off the axis
        ax_p.set_xlabel("step")
        ax_p.grid(True, alpha=0.3)
        if s.minimum is None:
            ax_p.axhline(ESCAPE, color="k", lw=1, ls=(0, (4, 3)))
            ax_p.set_ylabel("|y|: distance off the ridge")
            ax_p.set_title("escaping the saddle (|y| ≥ 1: escaped)", fontsize=13)
            what = f"optimizer (lr): step |y| ≥ {ESCAPE:g}"
        else:
            ax_p.axhline(tol, color="k", lw=1, ls=(0, (4, 3)))
            ax_p.set_ylabel("distance to the minimum")
            ax_p.set_title(f"distance to the minimum (dashed: {tol:g})", fontsize=13)
            what = f"optimizer (lr): step within {tol:g}"
        ax_p.legend(fontsize=10.5, title=what, title_fontsize=10.5, loc="center left", bbox_to_anchor=(1.01, 0.5),
                    framealpha=0.9)
    handles, labels = legend_handles(racers)
    fig.legend(handles, labels, loc="upper center", ncol=len(racers), fontsize=12.5, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.55 / height), handlelength=3.2, columnspacing=1.2)
    fig.suptitle("fastopt race: every step is one fused fastopt kernel call; markers every tenth of the steps",
                 fontsize=14, y=1 - 0.1 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - 1.05 / height))
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.15)  # "tight": the legends outside the axes
    plt.close(fig)
    return path


def _zoom(values: List[np.ndarray], skip: float = 0.25) -> tuple:
    """The accuracy axis (%): the range of every curve after its first `skip` share of epochs fills the
    upper 45% (where the optimizers' final differences, tenths of a percent, are visible); the lower part
    stays free for the legend and the inset (only the first epochs' steep rise crosses it)."""
    tail = np.concatenate([v[int(len(v) * skip):] for v in values])
    lo, hi = float(tail.min()), float(tail.max())
    span = max(hi - lo, 0.5)
    return max(0.0, lo - 1.25 * span), hi + 0.1 * span


#: the line of each state precision (fastopt train --state-dtypes)
STATE_DTYPE_DASHES = {"float32": "-", "bfloat16": "--", "int8": ":"}


def train_figure(histories: List, path: str, dpi: int = 80) -> str:
    """Per model: training loss (log scale) and validation accuracy per epoch, one line per optimizer;
    the accuracy axis zoomed onto the later epochs, with an inset of the whole range."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    models = list(dict.fromkeys(h.model for h in histories))
    names = [n for n in ORDER if any(h.optimizer == n for h in histories)]
    height = 4.9 * len(models) + 1.0
    fig, axes = plt.subplots(len(models), 2, figsize=(15, height), squeeze=False)
    for (ax_loss, ax_acc), model in zip(axes, models):
        mine = sorted((h for h in histories if h.model == model), key=lambda h: ORDER.index(h.optimizer))
        epochs = len(mine[0].train_loss)
        inset = ax_acc.inset_axes([0.52, 0.07, 0.45, 0.36]) if epochs > 2 else None
        accs = []
        for h in mine:
            x = np.arange(1, len(h.train_loss) + 1)
            acc = 100 * np.asarray(h.val_acc)
            accs.append(acc)
            style = line_style(h.optimizer, len(x), markers=10)
            if h.state_dtype:  # one optimizer in several state precisions: told apart by the line's dashes
                style["ls"] = STATE_DTYPE_DASHES.get(h.state_dtype, style["ls"])
            ax_loss.plot(x, h.train_loss, **style)
            ax_acc.plot(x, acc, **style, label=f"{h.label} (lr {h.lr:g}): {acc[-1]:.1f}%")
            if inset is not None:
                inset.plot(x, acc, color=style["color"], ls=style["ls"], lw=max(1.0, style["lw"] / 2))
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("training loss (data + penalty), log")
        ax_loss.set_title(f"{model}: training loss", fontsize=13)
        if inset is not None:
            lo, hi = _zoom(accs)
            ax_acc.set_ylim(lo, hi)
            ax_acc.set_title(f"{model}: validation accuracy (zoomed; inset: all of it)", fontsize=13)
            inset.set_ylim(0, 100)
            inset.set_xlim(0.5, epochs + 0.5)
            inset.tick_params(labelsize=8)
            inset.grid(True, alpha=0.3)
            inset.set_facecolor("#fbfbfb")
            inset.xaxis.set_major_locator(MaxNLocator(5, integer=True))
            inset.set_title("all epochs, 0-100%", fontsize=9, pad=2)
        else:
            ax_acc.set_title(f"{model}: validation accuracy", fontsize=13)
        ax_acc.set_ylabel("validation accuracy (%)")
        ax_acc.legend(fontsize=10.5, loc="center left", bbox_to_anchor=(1.01, 0.5),
                      title="optimizer (lr):\nfinal accuracy", title_fontsize=10.5, framealpha=0.9)
        for ax in (ax_loss, ax_acc):
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(0.5, epochs + 0.5)
    handles, labels = legend_handles(names)
    fig.legend(handles, labels, loc="upper center", ncol=len(names), fontsize=12.5, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.4 / height), handlelength=3.2)
    fig.suptitle(histories[0].caption if histories else "", fontsize=13, y=1 - 0.08 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.8 / height))
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.15)  # "tight": the legends outside the axes
    plt.close(fig)
    return path
