"""One check shared by the stateful optimizers (fastopt.optim) and the torch twins (fastopt.torch):
no two buffers of a step may share memory. The kernels check each call's arrays themselves, but a step
may make several calls (one per group, dtype or step number), so the whole step is checked first."""

from __future__ import annotations

from typing import Iterable, Tuple


def check_disjoint(spans: Iterable[Tuple[int, int, str]], what: str) -> None:
    """spans: (first byte, one past the last byte, name) of every non-empty buffer of the step.
    Raises ValueError naming the first two that overlap; `what` is "array" or "tensor"."""
    ordered = sorted(spans)
    if ordered and ordered[0][0] == 0:  # (no real buffer starts at address 0: checked once, on the lowest)
        raise TypeError(f"{ordered[0][2]} has no memory of its own (its address is 0: a tensor subclass such as "
                        "a DTensor, whose data lives in its local tensor); every buffer of a step must be "
                        "one the kernels can update (a plain parameter takes plain gradients and state)")
    for (_, prev_end, prev_name), (start, _, name) in zip(ordered, ordered[1:]):
        if start < prev_end:
            raise ValueError(f"{name} shares memory with {prev_name}; every {what} of a step must be "
                             "a separate buffer")
