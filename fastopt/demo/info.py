"""``fastopt info``: what this build contains, the devices it can run on, and a short CPU timing of
every optimizer (the classic five and those described as rules) against the NumPy reference."""

from __future__ import annotations

import importlib.util
import os
from typing import List

import fastopt
from fastopt.bench.report import cpu_model


def devices() -> List[dict]:
    """Every device kind fastopt knows of, found or not: the CPU, the CUDA backend (compiled or not, and
    the GPUs it can use), and torch when installed."""
    info = fastopt.build_info()
    rows = [dict(kind="CPU", available=True,
                 detail=f"{cpu_model()}, {os.cpu_count()} logical CPUs; kernels: {info['cpu_isa']} "
                        f"(supported: {', '.join(info['cpu_isas_supported'])}), {info['num_threads']} threads, "
                        f"OpenMP {'yes' if info.get('openmp') else 'no'}")]
    cuda = info.get("cuda") or {}
    if not cuda.get("compiled"):
        rows.append(dict(kind="CUDA", available=False,
                         detail="not built: this build of fastopt has no GPU backend (CPU kernels only)"))
    elif fastopt.cuda.device_count() == 0:
        rows.append(dict(kind="CUDA", available=False,
                         detail=f"built for {', '.join(cuda.get('architectures', []))}; no usable GPU here"))
    else:
        runs = [fastopt.cuda.runs_kernels(i) for i in range(fastopt.cuda.device_count())]
        names = ", ".join(fastopt.cuda.device_name(i) + ("" if ok else " (no kernels for it)") for i, ok in enumerate(runs))
        rows.append(dict(kind="CUDA", available=any(runs),
                         detail=f"{names}; built for {', '.join(cuda.get('architectures', []))}"))
    if importlib.util.find_spec("torch") is not None:
        import torch

        gpu = torch.cuda.is_available()
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) if gpu else ""
        rows.append(dict(kind="torch", available=True,
                         detail=f"{torch.__version__}; torch.cuda.is_available() = {gpu}"
                                + (f" ({names})" if gpu else "")))
    else:
        rows.append(dict(kind="torch", available=False, detail="not installed (optional)"))
    return rows


def device_lines() -> List[str]:
    return [f"  {d['kind']:6s} {d['detail']}" for d in devices()]


def _value(value) -> str:
    """A build_info value as text: lists joined, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def build_lines() -> List[str]:
    """build_info() one entry a line; its nested cuda entry as indented lines of its own."""
    info = fastopt.build_info()
    lines = [f"fastopt {info['version']}"]
    for key, value in info.items():
        if key == "version":
            continue
        if isinstance(value, dict):
            lines.append(f"  {key}:")
            lines += [f"    {k:17s} {_value(v)}" for k, v in value.items()]
        else:
            lines.append(f"  {key:19s} {_value(value)}")
    return lines


def quick_timing(size: int, rounds: int) -> List[str]:
    """One float32 update of every optimizer, fastopt against the NumPy reference and the bandwidth probe
    (a += b at the same size), all timed in the same interleaved rounds; medians, the spread of the
    rounds, and a note when the machine is busy (load average, or the probe's rounds spreading)."""
    from fastopt.bench.backends import select_backends
    from fastopt.bench.cases import PROBE, update_case
    from fastopt.bench.report import load_average
    from fastopt.bench.timing import NOISY_SPREAD, time_all
    from fastopt.bench.workloads import ALL_OPTIMIZERS

    cpus = os.cpu_count() or 1
    lines = []
    load = load_average()
    if load is not None and load > 0.25 * cpus:
        lines.append(f"note: load average {load:.2f} on {cpus} CPUs: other processes are running. A threaded update "
                     f"waits for its slowest thread, so one busy core can make it many times slower and vary "
                     f"between runs; FASTOPT_NUM_THREADS=1 gives steadier single-core figures")
    lines += [f"One update of {size:,} float32 elements on the CPU, median of {rounds} interleaved rounds "
              f"(the probe a += b in the same rounds; spread: interquartile range / median):",
              f"{'optimizer':10s} {'fastopt':>11s} {'numpy ref':>11s} {'speedup':>8s} {'fastopt GB/s':>13s} "
              f"{'% probe':>8s} {'spread':>7s}"]
    backends = select_backends(numpy=True, torch=False, cuda=False)
    busy = []
    for optimizer in ALL_OPTIMIZERS:
        case = update_case(optimizer, size, backends, probe=True)
        fns = {**case.impls, PROBE: case.probe}
        timings = time_all(fns, rounds, round_seconds=2e-3)
        t = timings.medians
        gbs = case.bytes_moved / t["fastopt"] / 1e9
        probe_gbs = case.probe_bytes / t[PROBE] / 1e9
        worst = max(timings.spreads["fastopt"], timings.spreads[PROBE])
        lines.append(f"{optimizer:10s} {t['fastopt'] * 1e3:8.3f} ms {t['numpy'] * 1e3:8.3f} ms "
                     f"{t['numpy'] / t['fastopt']:7.1f}x {gbs:12.1f} {100 * gbs / probe_gbs:7.0f}% "
                     f"{100 * worst:6.0f}%" + ("!" if worst > NOISY_SPREAD else ""))
        if timings.spreads[PROBE] > NOISY_SPREAD:
            busy.append(optimizer)
    if busy:
        lines.append(f"note: the probe's rounds spread by more than {100 * NOISY_SPREAD:.0f}% for {', '.join(busy)}: "
                     f"other work took the CPUs; rerun (more --rounds, a quiet machine) for firm figures")
    return lines
