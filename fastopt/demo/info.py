"""``fastopt info``: what this build contains, the devices it can run on, and a short CPU timing of
every optimizer against the NumPy reference (the first command of earlier releases)."""

from __future__ import annotations

import importlib.util
import os
import platform
from typing import List

import fastopt


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def devices() -> List[dict]:
    """Every device kind fastopt knows of, found or not: the CPU, the CUDA backend (compiled or not, and
    the GPUs it can use), and torch when installed."""
    info = fastopt.build_info()
    rows = [dict(kind="CPU", available=True,
                 detail=f"{_cpu_model()}, {os.cpu_count()} logical CPUs; kernels: {info['cpu_isa']} "
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


def build_lines() -> List[str]:
    info = fastopt.build_info()
    lines = [f"fastopt {info['version']}"]
    lines += [f"  {key:17s} {value}" for key, value in info.items() if key != "version"]
    return lines


def quick_timing(size: int, rounds: int) -> List[str]:
    """One float32 update of every optimizer, fastopt against the NumPy reference (interleaved medians)."""
    from fastopt.bench.backends import select_backends
    from fastopt.bench.cases import update_case
    from fastopt.bench.timing import interleaved_medians
    from fastopt.bench.workloads import OPTIMIZERS

    lines = [f"One update of {size:,} float32 elements on the CPU, median of {rounds} interleaved rounds:",
             f"{'optimizer':10s} {'fastopt':>11s} {'numpy ref':>11s} {'speedup':>8s} {'fastopt GB/s':>13s}"]
    backends = select_backends(numpy=True, torch=False)
    for optimizer in OPTIMIZERS:
        case = update_case(optimizer, size, backends, probe=False)
        t = interleaved_medians(case.impls, rounds=rounds)
        lines.append(f"{optimizer:10s} {t['fastopt'] * 1e3:8.3f} ms {t['numpy'] * 1e3:8.3f} ms "
                     f"{t['numpy'] / t['fastopt']:7.1f}x {case.bytes_moved / t['fastopt'] / 1e9:12.1f}")
    return lines
