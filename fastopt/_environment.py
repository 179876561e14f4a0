"""Settings read from the environment at import: FASTOPT_CPU_ISA and FASTOPT_NUM_THREADS."""

from __future__ import annotations

import os

from fastopt._core import set_cpu_isa, set_num_threads


def apply_environment() -> None:
    isa = os.environ.get("FASTOPT_CPU_ISA")
    if isa:
        try:
            set_cpu_isa(isa.strip().lower())
        except ValueError as error:
            raise ImportError(f"FASTOPT_CPU_ISA: {error}") from None
    threads = os.environ.get("FASTOPT_NUM_THREADS")
    if threads:
        try:
            count = int(threads)
            set_num_threads(count)
        except ValueError:
            raise ImportError(f"FASTOPT_NUM_THREADS must be an integer >= 1, got {threads!r}") from None
