"""Settings read from the environment at import: FASTOPT_CPU_ISA and FASTOPT_NUM_THREADS."""

from __future__ import annotations

import os
import warnings

from fastopt._core import _MAX_NUM_THREADS, set_cpu_isa, set_num_threads


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
        except ValueError:
            count = 0
        if count < 1:
            raise ImportError(f"FASTOPT_NUM_THREADS must be an integer >= 1, got {threads!r}")
        if count > _MAX_NUM_THREADS:
            # Capped as OMP_NUM_THREADS is (the native side caps that one): an environment setting
            # is often shared with other programs, and an import failure would be harsher than a cap.
            warnings.warn(f"FASTOPT_NUM_THREADS={count} is above fastopt's cap; using {_MAX_NUM_THREADS} threads",
                          RuntimeWarning, stacklevel=2)
            count = _MAX_NUM_THREADS
        set_num_threads(count)
