"""The benchmark figure (matplotlib optional): a title naming the machine, one legend for every panel
(each implementation keeps its colour, marker and line style everywhere), then

- the optimizer updates: with three sizes or more, per optimizer the time per update and the effective
  GB/s against size (log-log, the probe dashed); with one or two sizes (--quick), per size grouped bars
  of every optimizer (time per update, with each peer's ratio to fastopt written on its bar, and GB/s
  with the probe as a black line);
- GPT-2, the losses and the CUDA rows as horizontal bars below.

Also usable on a saved run: ``python -m fastopt.bench.plot bench.json bench.png``.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, List, Optional


# Fixed styles, so that an implementation looks the same in every panel and run: colour, marker, line.
_STYLE = {
    "fastopt": ("#1f77b4", "o", "-"),
    "numpy": ("#ff7f0e", "s", "--"),
    "torch-forloop": ("#2ca02c", "^", ":"),
    "torch-foreach": ("#d62728", "v", "-."),
    "torch-fused": ("#9467bd", "D", (0, (5, 1, 1, 1))),
    "torch": ("#9467bd", "D", "-"),
    "torch-cuda-fused": ("#9467bd", "D", "-"),
    "torch-cuda-foreach": ("#d62728", "v", "-."),
    "torch-cuda": ("#9467bd", "D", "-"),
}
_EXTRA = ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def style(impl: str, palette: Dict[str, tuple]) -> tuple:
    """(colour, marker, line style) of an implementation; fastopt's variants share its colour."""
    if impl in _STYLE:
        return _STYLE[impl]
    if impl.startswith("fastopt"):
        return _STYLE["fastopt"]
    if impl not in palette:
        palette[impl] = (_EXTRA[len(palette) % len(_EXTRA)], "P", "-")
    return palette[impl]


def _seconds(value: float, _pos=None) -> str:
    """Tick label of a time axis: 2 us, 50 ms, 1 s."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if value >= scale * 0.999:
            return f"{value / scale:g} {unit}"
    return f"{value:g} s"


def _number(value: float, _pos=None) -> str:
    return f"{value:g}"


def log_axis(axis, label) -> None:
    """A readable log axis (call it once the limits are set): labels in units, at 1, 2 and 5 of each
    decade when the axis spans a few decades, at each power of ten when it spans more."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    import math

    axis.axes.autoscale_view()
    lo, hi = sorted(axis.get_view_interval())
    decades = math.log10(hi / lo) if lo > 0 and hi > lo else 1.0
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 3.5 else (1.0,), numticks=30))
    axis.set_major_formatter(FuncFormatter(label))
    axis.set_minor_formatter(NullFormatter())


def _ratio(r: float) -> str:
    return f"{r:.2g}x" if r < 10 else f"{r:,.0f}x"


def _hatch(impl: str) -> Optional[str]:
    """fastopt's second variant (out=buffer) and the CUDA rows' foreach get a hatch to tell them apart."""
    return "//" if impl.endswith("(out=buffer)") else None


def _line_panels(axes, sweep, optimizers, palette):
    for row_axes, optimizer in zip(axes, optimizers):
        ax_t, ax_b = row_axes
        mine = [r for r in sweep if r["case"] == optimizer]
        for impl in dict.fromkeys(r["impl"] for r in mine):
            pts = sorted((r["n"], r["seconds"], r["gb_per_s"]) for r in mine if r["impl"] == impl)
            ns, ts, gbs = zip(*pts)
            color, marker, line = style(impl, palette)
            kw = dict(color=color, marker=marker, ls=line, ms=5, label=impl, lw=2.6 if impl == "fastopt" else 1.4,
                      zorder=3 if impl == "fastopt" else 2)
            ax_t.plot(ns, ts, **kw)
            ax_b.plot(ns, gbs, **kw)
        probe = sorted({(r["n"], r["probe_gb_per_s"]) for r in mine if r["probe_gb_per_s"]})
        if probe:
            ns, gbs = zip(*probe)
            ax_b.plot(ns, gbs, color="k", ls="--", lw=1.2, label="probe a += b")
        ax_t.set_ylabel("time per update (log)")
        ax_b.set_ylabel("effective GB/s (log)")
        ax_t.set_title(f"{optimizer}: time per update (lower is better)", fontsize=11)
        ax_b.set_title(f"{optimizer}: effective bandwidth (higher is better)", fontsize=11)
        for ax in row_axes:
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_xlabel("float32 elements")
        log_axis(ax_t.yaxis, _seconds)
        log_axis(ax_b.yaxis, _number)


def _bar_panels(axes, sweep, sizes, palette):
    """One row per size: grouped bars, one group per optimizer, one bar per implementation."""

    for (ax_t, ax_b), n in zip(axes, sizes):
        mine = [r for r in sweep if r["n"] == n]
        optimizers = list(dict.fromkeys(r["case"] for r in mine))
        impls = list(dict.fromkeys(r["impl"] for r in mine))
        width = 0.8 / len(impls)
        for k, impl in enumerate(impls):
            color, _, _ = style(impl, palette)
            xs, ts, gbs, ratios = [], [], [], []
            for i, optimizer in enumerate(optimizers):
                row = next((r for r in mine if r["case"] == optimizer and r["impl"] == impl), None)
                if row is not None:
                    xs.append(i - 0.4 + (k + 0.5) * width)
                    ts.append(row["seconds"])
                    gbs.append(row["gb_per_s"])
                    ratios.append(row["ratio_to_fastopt"])
            ax_t.bar(xs, ts, width, color=color, label=impl, edgecolor="k", lw=0.4, hatch=_hatch(impl))
            ax_b.bar(xs, gbs, width, color=color, label=impl, edgecolor="k", lw=0.4, hatch=_hatch(impl))
            if not impl.startswith("fastopt"):
                for x, t, ratio in zip(xs, ts, ratios):
                    ax_t.annotate(_ratio(ratio), (x, t), xytext=(0, 2), textcoords="offset points",
                                  ha="center", va="bottom", fontsize=7.5, rotation=90)
        for i, optimizer in enumerate(optimizers):
            probe = next((r["probe_gb_per_s"] for r in mine if r["case"] == optimizer and r["probe_gb_per_s"]), None)
            if probe:
                ax_b.plot([i - 0.45, i + 0.45], [probe, probe], color="k", ls="--", lw=1.4,
                          label="probe a += b" if i == 0 else None)
        for ax in (ax_t, ax_b):
            # (thirteen optimizers' names side by side overlap: slanted past six)
            many = len(optimizers) > 6
            ax.set_xticks(range(len(optimizers)), optimizers, fontsize=9 if many else 10,
                          rotation=35 if many else 0, ha="right" if many else "center")
            ax.set_yscale("log")
            ax.grid(True, axis="y", which="major", alpha=0.3)
        ax_t.set_ylim(top=ax_t.get_ylim()[1] * 8)  # room for the ratio labels
        log_axis(ax_t.yaxis, _seconds)
        log_axis(ax_b.yaxis, _number)
        ax_t.set_ylabel("time per update (log)")
        ax_b.set_ylabel("effective GB/s (log)")
        ax_t.set_title(f"{n:,} elements: time per update (on the bars: / fastopt's)", fontsize=11)
        ax_b.set_title(f"{n:,} elements: effective GB/s (dashed: the probe)", fontsize=11)


def _other_panels(ax_t, ax_b, others, palette):

    labels = [f"{r['case']} {r['label'].split(':')[0].replace(' float32 logits', '')}: {r['impl']}"
              for r in others]
    ypos = list(range(len(others)))[::-1]
    colors = [style(r["impl"], palette)[0] for r in others]
    hatches = [_hatch(r["impl"]) for r in others]
    for y, r, c, h in zip(ypos, others, colors, hatches):
        ax_t.barh(y, r["seconds"], color=c, hatch=h, edgecolor="k", lw=0.4)
        ax_b.barh(y, r["gb_per_s"], color=c, hatch=h, edgecolor="k", lw=0.4)
        ax_t.annotate(" " + _ratio(r["ratio_to_fastopt"]) if not r["impl"].startswith("fastopt") else "",
                      (r["seconds"], y), va="center", fontsize=8)
        if r["probe_gb_per_s"]:
            ax_b.plot([r["probe_gb_per_s"]] * 2, [y - 0.4, y + 0.4], "k--", lw=1.2)
    ax_t.set_yticks(ypos, labels, fontsize=9)
    ax_b.set_yticks(ypos, [""] * len(ypos))
    ax_t.set_xscale("log")
    log_axis(ax_t.xaxis, _seconds)
    ax_t.set_xlabel("time per call (log); after the bar: time / fastopt's")
    ax_b.set_xlabel("effective GB/s (dashed: probe at the same size)")
    parts = dict(gpt2="GPT-2 small AdamW (one call over 148 tensors)", losses="losses (float32 logits)",
                 cuda="CUDA (dashed: a device copy of the same bytes)")
    ax_t.set_title(" and ".join(parts[p] for p in dict.fromkeys(r["part"] for r in others)), fontsize=11)
    for ax in (ax_t, ax_b):
        ax.grid(True, axis="x", alpha=0.3)


def plot(rows: List[dict], path: str, title: Optional[str] = None) -> Optional[str]:
    """Write the figure to path; None (and nothing written) when matplotlib is not installed or there
    are no rows."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None

    sweep = [r for r in rows if r["part"] == "optimizers"]
    others = [r for r in rows if r["part"] != "optimizers"]
    optimizers = list(dict.fromkeys(r["case"] for r in sweep))
    sizes = sorted({r["n"] for r in sweep})
    lines = len(sizes) >= 3
    sweep_rows = len(optimizers) if lines else len(sizes)
    n_rows = sweep_rows + (1 if others else 0)
    if n_rows == 0:
        return None
    heights = [3.2 if lines else 3.6] * sweep_rows + ([max(2.6, 0.3 * len(others) + 1.2)] if others else [])
    fig, axes = plt.subplots(n_rows, 2, figsize=(14, sum(heights) + 1.3), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    palette: Dict[str, tuple] = {}
    if sweep:
        (_line_panels if lines else _bar_panels)(axes[:sweep_rows], sweep, optimizers if lines else sizes, palette)
    if others:
        _other_panels(*axes[-1], others, palette)

    # One legend for the whole figure: every implementation that appears, the probe last.
    handles: Dict[str, object] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    for r in others:
        if r["impl"] not in handles:
            color, _, _ = style(r["impl"], palette)
            handles[r["impl"]] = matplotlib.patches.Patch(facecolor=color, edgecolor="k", hatch=_hatch(r["impl"]))
    names = sorted(handles, key=lambda n: (n.startswith("probe"), not n.startswith("fastopt"), n != "fastopt",
                                           n.startswith("torch")))
    height = sum(heights) + 1.3
    fig.legend([handles[n] for n in names], names, loc="upper center", ncol=min(len(names), 5), fontsize=10.5,
               bbox_to_anchor=(0.5, 1 - 0.5 / height), frameon=False)
    fig.suptitle(title or "fastopt bench", fontsize=13, y=1 - 0.08 / height)
    fig.tight_layout(rect=(0, 0, 1, 1 - (0.75 + 0.2 * ((len(names) - 1) // 5)) / height))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def title_of(doc: dict) -> str:
    """The figure's title from a saved run: its machine and build (as the command line writes it)."""
    from fastopt.bench.report import machine_title

    machine, info = doc.get("machine", {}), doc.get("build_info", {})
    quick = " --quick" if doc.get("settings", {}).get("quick") else ""
    try:
        return f"fastopt bench{quick}: {machine_title(info, machine)}"
    except KeyError:
        return "fastopt bench"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m fastopt.bench.plot RESULTS.json OUT.png", file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        doc = json.load(f)
    if plot(doc["results"], argv[1], title=title_of(doc)) is None:
        print("matplotlib is not installed (pip install matplotlib): no plot", file=sys.stderr)
        return 1
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
