"""``fastopt race --gif``: the race as an animated GIF, every surface side by side, the racers moving
at the same number of steps per frame (equal time, as in a race), each with a comet tail of its last
steps over the whole path drawn faintly.

The static picture (backgrounds, axes, legend) is drawn once; each frame restores it and draws only the
racers and the title over it (matplotlib's blitting), then the frames go to Pillow (which comes with
matplotlib) as one GIF with a shared palette. matplotlib's own PillowWriter redraws the whole figure for
every frame: the tick labels and legend alone made a 60-frame race take 30-40 s instead of a few."""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np

from fastopt.demo.plots import ORDER, STYLES, draw_surface, legend_handles, pyplot, width

FRAMES = 50        # frames of racing (plus HOLD frames of the finish)
HOLD = 10
FPS = 10
TAIL = 0.1         # the comet tail: the last tenth of the steps so far


def frame_steps(steps: int, frames: int = FRAMES) -> np.ndarray:
    """The step shown by each frame: evenly spaced from 1 to steps (fewer frames when steps is small)."""
    return np.unique(np.linspace(1, steps, min(frames, steps)).round().astype(int))


def race_gif(results: Sequence, surfaces: Dict, path: str, dpi: int = 60, frames: int = FRAMES) -> str:
    """Write the animated race to path (a GIF); returns path."""
    from PIL import Image

    plt = pyplot()
    names = list(dict.fromkeys(r.surface for r in results))
    racers = [n for n in ORDER if any(r.optimizer == n for r in results)]
    cols = min(len(names), 2)
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 4.6 * rows + 0.9), squeeze=False, dpi=dpi)
    artists = []  # (result, faint whole-path line, tail line, head marker)
    for ax, name in zip(axes.flat, names):
        draw_surface(ax, surfaces[name], grid=200, fast=True)
        for r in sorted((r for r in results if r.surface == name), key=lambda r: ORDER.index(r.optimizer)):
            s = STYLES[r.optimizer]
            z = 2 + ORDER.index(r.optimizer) * 0.1
            faint, = ax.plot([], [], color=s["color"], ls=s["ls"], lw=max(1.0, width(r.optimizer) / 2.5),
                             alpha=0.5, zorder=z)
            tail, = ax.plot([], [], color=s["color"], ls="-", lw=width(r.optimizer, 4.0, 1.8), zorder=z)
            head, = ax.plot([], [], color=s["color"], marker=s["marker"], ms=11, mec="k", mew=0.8, ls="",
                            zorder=10 + z)
            artists.append((r, faint, tail, head))
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles, labels = legend_handles(racers)
    fig.legend(handles, labels, loc="upper center", ncol=min(len(racers), 4), fontsize=12, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.5 / (4.6 * rows + 0.9)), handlelength=3)
    title = fig.suptitle("", fontsize=14, y=0.995)
    fig.tight_layout(rect=(0, 0, 1, 1 - 1.05 / (4.6 * rows + 0.9)))

    total = max(len(r.path) for r in results) - 1
    shown = list(frame_steps(total, frames)) + [total] * HOLD
    moving = sorted((a for _, *group in artists for a in group), key=lambda a: a.get_zorder()) + [title]
    for a in moving:
        a.set_animated(True)  # left out of canvas.draw(): drawn per frame over the saved background
    canvas = fig.canvas
    canvas.draw()
    background = canvas.copy_from_bbox(fig.bbox)
    images = []
    for t in shown:
        n_tail = max(2, int(TAIL * t))
        for r, faint, tail, head in artists:
            k = min(t, len(r.path) - 1)  # a racer that stopped (diverged, left the saddle's box) stays put
            faint.set_data(r.path[:k + 1, 0], r.path[:k + 1, 1])
            tail.set_data(r.path[max(0, k - n_tail):k + 1, 0], r.path[max(0, k - n_tail):k + 1, 1])
            head.set_data([r.path[k, 0]], [r.path[k, 1]])
        title.set_text(f"fastopt race, step {t:,} of {total:,}: every step one fused fastopt kernel call")
        canvas.restore_region(background)
        for a in moving:
            fig.draw_artist(a)
        width_px, height_px = canvas.get_width_height()
        images.append(Image.frombuffer("RGBA", (width_px, height_px), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1)
                      .convert("RGB"))
    plt.close(fig)
    # One palette for every frame: no flicker, a smaller file. The racers' colours, the gold minimum,
    # black and white go in exactly (they cover few pixels, so a palette fitted to the frame alone would
    # merge them into their neighbours); the rest is fitted to the last frame, which holds every path.
    from matplotlib.colors import to_rgb

    keys = [tuple(round(255 * c) for c in to_rgb(color)) for color in
            [STYLES[n]["color"] for n in racers] + ["gold", "black", "white"]]
    fitted = images[-1].quantize(colors=256 - len(keys)).getpalette()[:3 * (256 - len(keys))]
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for key in keys for v in key] + fitted)
    frames_p = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]
    frames_p[0].save(path, save_all=True, append_images=frames_p[1:], duration=round(1000 / FPS), loop=0)
    return path
