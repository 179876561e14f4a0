"""The PNG figure: per optimizer, time vs size and GB/s vs size (log-log), one line per
implementation, the probe dashed; GPT-2 and the losses as bars below. matplotlib is optional.

Also usable on a saved run: ``python -m fastopt.bench.plot bench.json bench.png``.
"""

from __future__ import annotations

import json
import sys
from typing import List, Optional

_STYLE = {  # fixed colours, so that an implementation looks the same in every panel and run
    "fastopt": "C0", "numpy": "C1", "torch-forloop": "C2", "torch-foreach": "C3", "torch-fused": "C4",
}


def _color(impl: str, palette: dict) -> str:
    if impl.startswith("fastopt"):
        return _STYLE["fastopt"]
    if impl in _STYLE:
        return _STYLE[impl]
    return palette.setdefault(impl, f"C{5 + len(palette) % 5}")


def plot(rows: List[dict], path: str) -> Optional[str]:
    """Write the figure to path; None (and nothing written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    sweep = [r for r in rows if r["part"] == "optimizers"]
    others = [r for r in rows if r["part"] != "optimizers"]
    optimizers = list(dict.fromkeys(r["case"] for r in sweep))
    n_rows = len(optimizers) + (1 if others else 0)
    if n_rows == 0:
        return None
    heights = [3.0] * len(optimizers) + ([max(2.5, 0.28 * len(others) + 1)] if others else [])
    fig, axes = plt.subplots(n_rows, 2, figsize=(13, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    palette: dict = {}

    for row_axes, optimizer in zip(axes, optimizers):
        ax_t, ax_b = row_axes
        mine = [r for r in sweep if r["case"] == optimizer]
        for impl in dict.fromkeys(r["impl"] for r in mine):
            pts = sorted((r["n"], r["seconds"], r["gb_per_s"]) for r in mine if r["impl"] == impl)
            ns, ts, gbs = zip(*pts)
            style = dict(marker="o", ms=3, color=_color(impl, palette), label=impl,
                         lw=2.2 if impl == "fastopt" else 1.3)
            ax_t.plot(ns, ts, **style)
            ax_b.plot(ns, gbs, **style)
        probe = sorted({(r["n"], r["probe_gb_per_s"]) for r in mine if r["probe_gb_per_s"]})
        if probe:
            ns, gbs = zip(*probe)
            ax_b.plot(ns, gbs, "k--", lw=1, label="probe a += b")
        ax_t.set_ylabel("seconds per update")
        ax_b.set_ylabel("effective GB/s")
        ax_t.set_title(f"{optimizer}: time per update (float32)", fontsize=10)
        ax_b.set_title(f"{optimizer}: effective bandwidth", fontsize=10)
        for ax in row_axes:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_xlabel("elements")
        ax_b.legend(fontsize=7, loc="best")

    if others:
        ax_t, ax_b = axes[-1]
        labels = [f"{r['case']} {r['label'].split(':')[0].replace(' float32 logits', '')}: {r['impl']}"
                  for r in others]
        ypos = list(range(len(others)))[::-1]
        colors = [_color(r["impl"], palette) for r in others]
        ax_t.barh(ypos, [r["seconds"] for r in others], color=colors)
        ax_b.barh(ypos, [r["gb_per_s"] for r in others], color=colors)
        for r, y in zip(others, ypos):
            if r["probe_gb_per_s"]:
                ax_b.plot([r["probe_gb_per_s"]] * 2, [y - 0.4, y + 0.4], "k--", lw=1)
        ax_t.set_yticks(ypos, labels, fontsize=7)
        ax_b.set_yticks(ypos, [""] * len(ypos))
        ax_t.set_xscale("log")
        ax_t.set_xlabel("seconds per call (log)")
        ax_b.set_xlabel("effective GB/s (dashed: probe at the same size)")
        parts = dict(gpt2="GPT-2 small AdamW (one call over 148 tensors)", losses="losses (float32 logits)",
                     cuda="CUDA (dashed: a device copy of the same bytes)")
        ax_t.set_title(" and ".join(parts[p] for p in dict.fromkeys(r["part"] for r in others)), fontsize=10)
        for ax in (ax_t, ax_b):
            ax.grid(True, axis="x", alpha=0.3)

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m fastopt.bench.plot RESULTS.json OUT.png", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        rows = json.load(f)["results"]
    if plot(rows, argv[1]) is None:
        print("matplotlib is not installed (pip install matplotlib): no plot", file=sys.stderr)
        return 1
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
