"""Timing: medians of interleaved rounds, with enough calls per round to rise above the timer.

Every implementation of a case is timed in interleaved rounds (A, B, C, then B, C, A, ...: the one
that goes first rotates) so that drift of the machine (clock frequency, other load) hits all of them
alike; the figure reported is the median over rounds of the seconds per call, and the spread of the rounds
(their interquartile range / median) says how far to trust it: on a busy machine it grows. Before that, every
function is called once (warm-up: first-touch page faults, lazy initialisation, torch's optimizer
state) and the number of calls per round is calibrated per function, so that a round of a 3 us call
lasts milliseconds while a round of a 100 ms call is one call.

GPU work is timed the same way with `sync` (torch.cuda.synchronize for the CUDA cases): the device is
synchronised before a batch of calls starts the clock and again before it stops it, so that the batch's
time is the time its queued work took (host launch costs included when they are the bottleneck).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Union

#: Rounds per case: (full suite, --quick), by the number of elements a call touches.
_ROUNDS = ((10_000, 21, 9), (2_000_000, 11, 5), (None, 7, 3))
#: Seconds one round of one function should last at least (full suite, --quick).
ROUND_SECONDS = (5e-3, 2e-3)
#: Most calls per round (a 1K-element update takes about 3 us: 2,000 calls = 6 ms).
MAX_CALLS = 2_000


def plan_rounds(n: int, quick: bool = False) -> int:
    """Interleaved rounds for a case whose calls touch n elements: more for small, noisy sizes."""
    for limit, full, fast in _ROUNDS:
        if limit is None or n <= limit:
            return fast if quick else full
    raise AssertionError("unreachable")


def _batch_seconds(fn: Callable[[], object], count: int, sync: Optional[Callable[[], None]]) -> float:
    """Seconds for `count` calls of fn (with sync: from an idle device to the end of their work)."""
    if sync is not None:
        sync()
    start = time.perf_counter()
    for _ in range(count):
        fn()
    if sync is not None:
        sync()
    return time.perf_counter() - start


def calibrate_calls(fn: Callable[[], object], round_seconds: float, max_calls: int = MAX_CALLS,
                    sync: Optional[Callable[[], None]] = None) -> int:
    """Calls per round so that one round of fn lasts at least round_seconds (fn already warmed up)."""
    calls = 1
    while True:
        elapsed = _batch_seconds(fn, calls, sync)
        # Measure over at least a tenth of the target (or the cap) before trusting the estimate.
        if elapsed >= round_seconds / 10 or calls >= max_calls:
            per_call = elapsed / calls
            break
        calls = min(calls * 4, max_calls)
    if per_call <= 0:
        return max_calls
    return max(1, min(max_calls, math.ceil(round_seconds / per_call)))


def interleaved_samples(fns: Dict[str, Callable[[], object]], rounds: int,
                        calls: Union[int, Mapping[str, int]] = 1,
                        progress: Optional[Callable[[], None]] = None,
                        warmup: bool = True, sync: Optional[Callable[[], None]] = None) -> Dict[str, List[float]]:
    """Seconds per call of each function in each of `rounds` interleaved rounds.

    `calls` is the number of calls per round: one number for all, or one per function name.
    `progress` is called after every round. `sync` waits for the device around each batch (GPU work).
    """
    per_fn = {name: calls if isinstance(calls, int) else calls[name] for name in fns}
    samples = {name: [] for name in fns}
    names = list(fns)
    if warmup:
        for fn in fns.values():
            fn()
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            count = per_fn[name]
            samples[name].append(_batch_seconds(fns[name], count, sync) / count)
        if progress is not None:
            progress()
    return samples


def interleaved_medians(fns: Dict[str, Callable[[], object]], rounds: int,
                        calls: Union[int, Mapping[str, int]] = 1,
                        progress: Optional[Callable[[], None]] = None,
                        warmup: bool = True, sync: Optional[Callable[[], None]] = None) -> Dict[str, float]:
    """Median seconds per call of each function over `rounds` interleaved rounds (interleaved_samples)."""
    samples = interleaved_samples(fns, rounds, calls, progress, warmup, sync)
    return {name: statistics.median(s) for name, s in samples.items()}


def spread(samples: List[float]) -> float:
    """Interquartile range / median of one function's rounds: a few % on a quiet machine, tens of %
    when other work took the CPUs in some rounds. Unlike (slowest - fastest), one stray round (an
    interrupt, a page fault) does not move it, as it does not move the median."""
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    median = statistics.median(samples)
    return (q3 - q1) / median if median > 0 else 0.0


#: Spread above which a timing is called noisy.
NOISY_SPREAD = 0.25


@dataclass
class Timings:
    """What time_all measured: per function the median seconds per call, the calls per round and the
    spread of the rounds."""

    medians: Dict[str, float]
    calls: Dict[str, int]
    spreads: Dict[str, float]

    def noisy(self) -> Dict[str, float]:
        """The functions whose rounds spread by more than NOISY_SPREAD, with their spread."""
        return {name: s for name, s in self.spreads.items() if s > NOISY_SPREAD}


def time_all(fns: Dict[str, Callable[[], object]], rounds: int, round_seconds: float,
             progress: Optional[Callable[[], None]] = None, sync: Optional[Callable[[], None]] = None) -> Timings:
    """Warm up, calibrate and time every function in interleaved rounds."""
    for fn in fns.values():
        fn()
    calls = {name: calibrate_calls(fn, round_seconds, sync=sync) for name, fn in fns.items()}
    samples = interleaved_samples(fns, rounds, calls, progress=progress, warmup=False, sync=sync)
    return Timings({name: statistics.median(s) for name, s in samples.items()}, calls,
                   {name: spread(s) for name, s in samples.items()})
