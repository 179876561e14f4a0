"""The demo's pictures, drawn with matplotlib's Agg backend (no display needed): the race's contour
plots with every optimizer's path, and the training curves. matplotlib is the `demo` extra; the
command line checks for it before any work starts (fastopt.demo.require)."""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np

# One colour per optimizer, the same in every picture.
COLORS = dict(sgd="#d62728", momentum="#1f77b4", nesterov="#17becf", adagrad="#8c564b",
              rmsprop="#2ca02c", adam="#ff7f0e", adamw="#9467bd")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless: never look for a display
    import matplotlib.pyplot as plt

    return plt


def race_figure(results: Sequence, surfaces: Dict, path: str, dpi: int = 72) -> str:
    """One contour panel per surface, each racer's path on it; start ○, end ×, minimum ★."""
    from fastopt.demo.race import LABELS

    plt = pyplot()
    names = list(dict.fromkeys(r.surface for r in results))
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        s = surfaces[name]
        x0, x1, y0, y1 = s.box
        X, Y = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
        Z = s.f(X, Y)
        if s.minimum is None:  # the saddle: plain levels, both signs
            ax.contourf(X, Y, Z, levels=20, cmap="Greys_r", alpha=0.55)
            ax.contour(X, Y, Z, levels=[0.0], colors="k", linewidths=0.6)
        else:  # minimum 0: log-spaced levels show the valley floor as well as the walls
            Z = np.log10(Z + 1e-3)
            ax.contourf(X, Y, Z, levels=20, cmap="Greys_r", alpha=0.55)
            ax.plot(*s.minimum, marker="*", color="gold", ms=16, mec="k", zorder=5)
        for r in results:
            if r.surface != name:
                continue
            c = COLORS[r.optimizer]
            steps = "-" if r.reached is None else r.reached
            ax.plot(r.path[:, 0], r.path[:, 1], color=c, lw=1.4, alpha=0.9,
                    label=f"{LABELS[r.optimizer]} (lr {r.lr:g}): {steps}")
            ax.plot(*r.path[-1], marker="x", color=c, ms=8, mew=2)
        ax.plot(*s.start, marker="o", color="k", mfc="white", ms=8, zorder=5)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(s.title, fontsize=11)
        what = "step |y| ≥ 1" if s.minimum is None else "steps to min"
        ax.legend(fontsize=7, loc="lower right", title=f"optimizer: {what}", title_fontsize=7, framealpha=0.85)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle("fastopt race: every step is a fused fastopt kernel call", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def train_figure(histories: List, path: str, dpi: int = 72) -> str:
    """Per model: training loss (log scale) and validation accuracy per epoch, one line per optimizer."""
    from fastopt.demo.race import LABELS

    plt = pyplot()
    models = list(dict.fromkeys(h.model for h in histories))
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 3.8 * len(models)), squeeze=False)
    for (ax_loss, ax_acc), model in zip(axes, models):
        for h in histories:
            if h.model != model:
                continue
            epochs = np.arange(1, len(h.train_loss) + 1)
            style = dict(color=COLORS[h.optimizer], lw=1.6, label=f"{LABELS[h.optimizer]} (lr {h.lr:g})")
            ax_loss.plot(epochs, h.train_loss, **style)
            ax_acc.plot(epochs, 100 * np.asarray(h.val_acc), **style)
        ax_loss.set_yscale("log")
        ax_loss.set_ylabel("training loss (data + penalty)")
        ax_acc.set_ylabel("validation accuracy (%)")
        ax_acc.set_ylim(max(0, min(80, ax_acc.get_ylim()[0])), 100)
        for ax in (ax_loss, ax_acc):
            ax.set_xlabel("epoch")
            ax.grid(True, alpha=0.3)
            ax.set_title(f"{model}: {'loss' if ax is ax_loss else 'validation accuracy'}", fontsize=10)
        ax_acc.legend(fontsize=7, loc="lower right")
    fig.suptitle(histories[0].caption if histories else "", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
