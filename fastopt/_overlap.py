"""One check shared by the stateful optimizers (fastopt.optim) and the torch twins (fastopt.torch): a
buffer a step writes (a parameter, a state) may share no memory with any other buffer of the step, while
buffers it only reads (the gradients) may share memory with one another, as torch.optim reads them (two
parameters handed one gradient tensor). The kernels check each call's arrays themselves, by the same rule
(csrc/common/overlap.h), but a step may make several calls (one per group, dtype or step number), so the
whole step is checked first."""

from __future__ import annotations

from typing import Iterable, Optional, Tuple

Span = Tuple[int, int, str, bool]  # (first byte, one past the last byte, name, written)


def first_shared_write(spans: Iterable[Span]) -> Optional[Tuple[Span, Span]]:
    """The first two spans (in order of first byte) that share memory where either is written, or None.
    In that order a span meets an earlier one exactly when it starts before that one's end, so only the
    furthest end so far matters: of any span (for a written one) and of the written ones (for a read one)."""
    furthest = furthest_written = None
    for span in sorted(spans, key=lambda s: s[0]):
        start, end, _, written = span
        other = furthest if written else furthest_written
        if other is not None and start < other[1]:
            return other, span
        if furthest is None or end > furthest[1]:
            furthest = span
        if written and (furthest_written is None or end > furthest_written[1]):
            furthest_written = span
    return None


def check_disjoint(spans: Iterable[Span], what: str) -> None:
    """spans: (first byte, one past the last byte, name, written) of every non-empty buffer of the step.
    Raises ValueError naming the first two that may not share memory; `what` is "array" or "tensor"."""
    spans = list(spans)
    lowest = min(spans, default=None)
    if lowest is not None and lowest[0] == 0:  # (no real buffer starts at address 0: checked once, on the lowest)
        raise TypeError(f"{lowest[2]} has no memory of its own (its address is 0: a tensor subclass such as "
                        "a DTensor, whose data lives in its local tensor); every buffer of a step must be "
                        "one the kernels can update (a plain parameter takes plain gradients and state)")
    pair = first_shared_write(spans)
    if pair is not None:
        (_, _, prev_name, _), (_, _, name, _) = pair
        raise ValueError(f"{name} shares memory with {prev_name}; every {what} a step writes must be a separate "
                         f"buffer (only the gradients, which it reads, may share memory)")
