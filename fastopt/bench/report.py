"""Results: rows (one per implementation and case), the printed tables, and the JSON file."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import sys
from typing import Dict, List, Optional

import numpy as np

import fastopt
from fastopt.bench.cases import Case
from fastopt.bench.timing import NOISY_SPREAD, Timings

COLUMNS = (f"{'case':14s} {'implementation':22s} {'median':>11s} {'GB/s':>8s} {'% probe':>8s} {'x fastopt':>10s} "
           f"{'spread':>7s}")


def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.2f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.3f} s"


def fmt_bytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def case_rows(case: Case, timings: Timings, rounds: int) -> List[dict]:
    """One row per implementation: median time, effective GB/s, % of the probe (timed in the same
    interleaved rounds), ratio to fastopt, the spread of the rounds (and on CUDA the probe's name and
    bytes, and the loss case's peak extra memory)."""
    times, calls = timings.medians, timings.calls
    probe_s = times.get(case.probe_name)
    probe_gbs = case.probe_bytes / probe_s / 1e9 if probe_s else None
    base = times[case.baseline]
    rows = []
    for impl, t in times.items():
        if impl == case.probe_name:
            continue
        gbs = case.bytes_moved / t / 1e9
        row = dict(
            part=case.part, case=case.name, label=case.label, n=case.n,
            shape=list(case.shape) if case.shape else None, dtype="float32", impl=impl,
            seconds=t, calls_per_round=calls.get(impl), rounds=rounds,
            bytes_per_call=case.bytes_moved, gb_per_s=gbs,
            probe_seconds=probe_s, probe_gb_per_s=probe_gbs,
            pct_of_probe=100 * gbs / probe_gbs if probe_gbs else None,
            ratio_to_fastopt=t / base, spread=timings.spreads[impl],
            probe_spread=timings.spreads.get(case.probe_name),
        )
        if case.device != "cpu":
            row.update(device=case.device, probe=case.probe_name, probe_bytes=case.probe_bytes if probe_s else None,
                       peak_extra_bytes=case.peak_extra.get(impl))
        elif case.peak_extra:
            row.update(peak_extra_bytes=case.peak_extra.get(impl))
        rows.append(row)
    return rows


def fmt_spread(value: float) -> str:
    """The spread of the rounds (interquartile range / median) as a percentage, '!' when noisy."""
    return f"{100 * value:6.0f}%" + ("!" if value > NOISY_SPREAD else " ")


def format_case(case: Case, rows: List[dict], timings: Timings) -> List[str]:
    lines = []
    for row in rows:
        pct = f"{row['pct_of_probe']:7.0f}%" if row["pct_of_probe"] is not None else f"{'-':>8s}"
        lines.append(f"{case.name:14s} {row['impl']:22s} {fmt_time(row['seconds']):>11s} "
                     f"{row['gb_per_s']:8.1f} {pct} {row['ratio_to_fastopt']:9.2f}x {fmt_spread(row['spread'])}")
    probe, times = case.probe_name, timings.medians
    if probe in times:
        gbs = case.probe_bytes / times[probe] / 1e9
        lines.append(f"{case.name:14s} {probe:22s} {fmt_time(times[probe]):>11s} {gbs:8.1f} {100:7.0f}% {'-':>10s} "
                     f"{fmt_spread(timings.spreads[probe])}")
    if case.peak_extra:
        unit_name, unit = case.peak_unit or ("N*C*4", case.n * 4)  # default: one float32 (N, C) buffer
        peaks = [f"{impl} {fmt_bytes(b)} = {b / unit:.2f} x {unit_name}" if b is not None else f"{impl} -"
                 for impl, b in case.peak_extra.items()]
        lines.append(f"peak extra memory in one call ({case.peak_how}): " + ", ".join(peaks))
    return lines


def busy_note(case: Case, timings: Timings) -> Optional[str]:
    """A line for a case measured while the machine was busy: the probe's rounds (a plain native loop,
    steady on a quiet machine) spread beyond NOISY_SPREAD. Other rows marked '!' vary by themselves
    (torch's Python loops, allocations)."""
    probe = timings.spreads.get(case.probe_name)
    if probe is None or probe <= NOISY_SPREAD:
        return None
    return (f"note: the probe's rounds spread by {100 * probe:.0f}% of their median: other work took the CPUs "
            f"during this case; its times and '% probe' are less certain than usual")


def group_header(case: Case) -> List[str]:
    return ["", f"== {case.label} ==", COLUMNS]


def per_call_lines(rows: List[dict], max_n: int = 10_000) -> List[str]:
    """fastopt's whole-call cost from Python on small arrays (the target: <= 3 us at 1,000 elements)."""
    lines = []
    sizes = sorted({r["n"] for r in rows if r["part"] == "optimizers" and r["n"] <= max_n})
    for n in sizes:
        parts = [f"{r['case']} {r['seconds'] * 1e6:.2f} us" for r in rows
                 if r["part"] == "optimizers" and r["n"] == n and r["impl"] == "fastopt"]
        if parts:
            target = " (target: <= 3 us)" if n == 1_000 else ""
            lines.append(f"fastopt per call from Python at {n:,} elements{target}: " + ", ".join(parts))
    return lines


def torch_info() -> Optional[dict]:
    try:
        import torch
    except ImportError:
        return None
    info = {"version": torch.__version__, "num_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(cuda=torch.version.cuda, gpu=torch.cuda.get_device_name(),
                    capability=f"{props.major}.{props.minor}", gpu_memory_bytes=props.total_memory,
                    multiprocessors=props.multi_processor_count,
                    l2_cache_bytes=getattr(props, "L2_cache_size", None))
    try:
        from importlib.metadata import version

        info["liger_kernel"] = version("liger-kernel")
    except Exception:  # not installed (any metadata error counts as that)  # noqa: BLE001
        info["liger_kernel"] = None
    return info


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def machine_info(with_torch: bool = True) -> dict:
    """The machine and the libraries; with_torch=False leaves torch unimported (it takes seconds) unless
    something imported it already ("torch": "left out")."""
    try:
        import matplotlib
        mpl = matplotlib.__version__
    except ImportError:
        mpl = None
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch_info() if with_torch or "torch" in sys.modules else "left out",
        "matplotlib": mpl,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def machine_title(info: dict, machine: dict) -> str:
    """One short line naming the machine and the build: CPU model, cores, fastopt's instruction set."""
    return (f"{machine.get('cpu_model') or machine.get('machine')}, {machine['cpu_count']} CPUs; "
            f"fastopt {info['version']} {info['cpu_isa']}, {info['num_threads']} threads")


def banner(info: dict, machine: dict) -> str:
    t = machine["torch"]
    if t == "left out":
        torch_text, t = "torch left out", None
    else:
        torch_text = f"torch {t['version']} ({t['num_threads']} threads)" if t else "torch not installed"
    if t and t.get("gpu"):
        torch_text += f", GPU {t['gpu']} (CUDA {t['cuda']})"
    return (f"machine: {machine_title(info, machine)}; numpy {machine['numpy']}, {torch_text}; "
            f"{machine['platform']}")


def load_warning(machine: dict) -> Optional[str]:
    """A note when other processes keep the CPUs busy (1-minute load average above a quarter of the
    CPUs): threaded timings then wait for time slices."""
    load, cpus = machine.get("load_average_at_start"), machine.get("cpu_count") or 1
    if load and load[0] > 0.25 * cpus:
        return (f"note: load average {load[0]:.2f} on {cpus} CPUs before the start: other processes are "
                f"running. Threaded calls (torch, fastopt above 128K elements) wait for their slowest thread, so "
                f"one busy core can make them many times slower; the 'spread' column shows how much they vary")
    return None


def write_json(path: str, rows: List[dict], settings: dict, machine: dict) -> pathlib.Path:
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "build_info": fastopt.build_info(),
        "machine": machine,
        "settings": settings,
        "models": {
            "update_bytes_per_element": "arrays read + written x element size (AdamW fp32: 28, SGD momentum, "
                                        "Adagrad, RMSprop fp32: 20)",
            "loss_bytes_per_logit": "12 (read the logits twice, write the output once)",
            "probe": "fastopt._core._probe_add: a += b, float32, 12 bytes per element",
            "cuda_probe": "torch dst.copy_(src) on the GPU, float32 buffers of half the case's bytes each (a copy "
                          "reads and writes every byte: it moves the bytes of the case's call), at most 4 GiB",
            "cuda_timing": "torch.cuda.synchronize() before and after each timed batch of calls",
        },
        "results": rows,
    }
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return out
