"""One check shared by the stateful optimizers (fastopt.optim) and the torch twins (fastopt.torch):
no two buffers of a step may share memory. The kernels check each call's arrays themselves, but a step
may make several calls (one per group, dtype or step number), so the whole step is checked first."""

from __future__ import annotations

from typing import Iterable, Tuple


def check_disjoint(spans: Iterable[Tuple[int, int, str]], what: str) -> None:
    """spans: (first byte, one past the last byte, name) of every non-empty buffer of the step.
    Raises ValueError naming the first two that overlap; `what` is "array" or "tensor"."""
    ordered = sorted(spans)
    for (_, prev_end, prev_name), (start, _, name) in zip(ordered, ordered[1:]):
        if start < prev_end:
            raise ValueError(f"{name} shares memory with {prev_name}; every {what} of a step must be "
                             "a separate buffer")
