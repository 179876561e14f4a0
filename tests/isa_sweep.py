"""A run repeated at several thread counts and at every instruction set this CPU supports, for the tests that
the kernels write the same bits whatever the machine splits or vectorises (the thread count and instruction
set are put back afterwards)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Sequence, Tuple

import fastopt


def at_every_thread_count_and_isa(run: Callable[[], Any], threads: Sequence[int] = (1, 2, 3)) -> Dict[Tuple, Any]:
    """{(threads, isa): run()} for each thread count and each supported instruction set."""
    before_threads = fastopt.get_num_threads()
    before_isa = fastopt.build_info()["cpu_isa"]
    try:
        results = {}
        for count in threads:
            fastopt.set_num_threads(count)
            for isa in fastopt.build_info()["cpu_isas_supported"]:
                fastopt.set_cpu_isa(isa)
                results[(count, isa)] = run()
    finally:
        fastopt.set_num_threads(before_threads)
        fastopt.set_cpu_isa(before_isa)
    return results


def assert_same_everywhere(run: Callable[[], Any], threads: Sequence[int] = (1, 2, 3)) -> None:
    """run() gives one result at every thread count and instruction set (the differing ones are named)."""
    results = at_every_thread_count_and_isa(run, threads)
    first = next(iter(results.values()))
    assert all(r == first for r in results.values()), [k for k, r in results.items() if r != first]
