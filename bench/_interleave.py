"""The timing the interleaved benches share: two steps run alternately in one process (who goes first
alternates too, so neither always follows the other's cache traffic), each timed alone, the median of
each over the rounds."""

import statistics
import time


def interleaved_medians(a, b, rounds: int) -> tuple:
    """(median seconds of a(), median seconds of b()) over `rounds` alternating rounds."""
    ta, tb = [], []
    for r in range(rounds):
        for fn, out in ((a, ta), (b, tb)) if r % 2 == 0 else ((b, tb), (a, ta)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)
