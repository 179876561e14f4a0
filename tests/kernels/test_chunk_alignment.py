"""Large updates are cut into chunks whose boundaries fall on the parameter's cache lines
(csrc/cpu/parallel.h, make_chunks), so where they fall depends on the array's address. The update is
element-wise: every offset of the arrays in memory, every thread count and every instruction set must
give the same bits as the same update on freshly allocated arrays. Sizes cross the threading threshold
and chunk boundaries; offsets cover every element position within a 64-byte line, and operands at
offsets other than the parameter's. Each chunk is walked a line at a time, up or down as the operands'
offsets within their 4 KiB pages decide (csrc/cpu/line_order.h): page layouts that pick each order give
the same bits too."""

from __future__ import annotations

import numpy as np
import pytest

import fastopt
from kernel_cases import CASES, draw_hyper, kernel_kwargs

SIZES = [300_007, 131_072 + 3]


def at_offset(a: np.ndarray, offset: int) -> np.ndarray:
    """A copy of a whose first element lies `offset` elements past a 64-byte boundary."""
    per_line = 64 // a.itemsize
    buf = np.empty(a.size + 2 * per_line, a.dtype)
    start = (-buf.ctypes.data % 64) // a.itemsize + offset
    view = buf[start:start + a.size]
    view[...] = a
    assert view.ctypes.data % 64 == offset * a.itemsize
    return view


def run_case(case, hyper, params, grads, states, threads):
    before = fastopt.get_num_threads()
    fastopt.set_num_threads(threads)
    try:
        for t, g in enumerate(grads):
            step = {"step": t + 1} if case.takes_step else {}
            case.kernel(params, g, *[states.get(s) for s in case.states], **kernel_kwargs(case, hyper), **step)
    finally:
        fastopt.set_num_threads(before)


def draw_problem(case, sizes, steps, seed, dtype=np.float32):
    """(hyper, params, per-step gradients, states, wanted params, wanted states): fresh arrays of `sizes`,
    and what `steps` steps on one thread over copies of them give."""
    rng = np.random.default_rng(seed)
    hyper = draw_hyper(case, list(case.configs)[-1], rng)
    p0 = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [[rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(steps)]
    s0 = {s: [np.full(n, case.initial_state(s, hyper), dtype) for n in sizes] for s in case.used_states(hyper)}
    want_p = [p.copy() for p in p0]
    want_s = {s: [a.copy() for a in v] for s, v in s0.items()}
    run_case(case, hyper, want_p, grads, want_s, threads=1)
    return hyper, p0, grads, s0, want_p, want_s


def assert_same_bits(params, states, want_p, want_s, where):
    """Every parameter and state array holds exactly the bits of its counterpart in want_p / want_s."""
    for got, want in zip(params, want_p):
        assert got.tobytes() == want.tobytes(), ("param", *where)
    for s, want_arrays in want_s.items():
        for got, want in zip(states[s], want_arrays):
            assert got.tobytes() == want.tobytes(), (s, *where)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_any_offset_in_memory_gives_the_same_bits(case, dtype):
    hyper, p0, grads, s0, want_p, want_s = draw_problem(case, SIZES, steps=3, seed=3, dtype=dtype)

    per_line = 64 // np.dtype(dtype).itemsize
    for offset in range(per_line):
        for threads in (1, 2, 3):
            # the parameter at `offset`, the gradients and states elsewhere in their lines
            params = [at_offset(p, offset) for p in p0]
            g = [[at_offset(x, (offset + 1 + k) % per_line) for k, x in enumerate(gs)] for gs in grads]
            states = {s: [at_offset(a, (offset + 3) % per_line) for a in v] for s, v in s0.items()}
            run_case(case, hyper, params, g, states, threads)
            assert_same_bits(params, states, want_p, want_s, (case.name, offset, threads))


def at_page_offset(a: np.ndarray, offset: int) -> np.ndarray:
    """A copy of a whose first byte lies `offset` bytes past a 4 KiB page boundary."""
    buf = np.empty(a.nbytes + 8192, np.uint8)
    start = (-buf.ctypes.data) % 4096 + offset
    view = buf[start:start + a.nbytes].view(a.dtype)
    view[...] = a
    return view


# Byte offsets within a page of the parameter, the gradient and the states: the first walks a chunk's
# lines down (the parameter, written, just above the others: csrc/cpu/line_order.h, lines_down), the
# second up, the third is the same page offset for all.
PAGE_LAYOUTS = [(64, 16, 16), (16, 64, 64), (0, 0, 0)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("layout", PAGE_LAYOUTS, ids=lambda o: "-".join(map(str, o)))
def test_either_walking_order_gives_the_same_bits(case, layout):
    sizes = [5_003, 300_007]  # one chunk with a tail; several chunks
    hyper, p0, grads, s0, want_p, want_s = draw_problem(case, sizes, steps=2, seed=5)

    p_at, g_at, s_at = layout
    for threads in (1, 2):
        params = [at_page_offset(p, p_at) for p in p0]
        g = [[at_page_offset(x, g_at) for x in gs] for gs in grads]
        states = {s: [at_page_offset(a, s_at) for a in v] for s, v in s0.items()}
        run_case(case, hyper, params, g, states, threads)
        assert_same_bits(params, states, want_p, want_s, (case.name, layout, threads))


# Lists mixing tensors under a chunk (handed whole to the threads in turn) with larger ones (cut into one
# range per thread, the cuts on a 64-element grid from the chunk head: csrc/cpu/parallel.h, chunks_by_thread).
MIXED_SIZES = [100, 70_001, 5, 65_536, 200_003, 1_000, 64_000, 131_137]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_lists_of_mixed_sizes_give_the_same_bits_on_any_thread_count(case):
    hyper, p0, grads, s0, want_p, want_s = draw_problem(case, MIXED_SIZES, steps=2, seed=7)

    for threads in (2, 3, 4):
        # the parameters 16 bytes past a line (a chunk head of 12 elements), the rest aligned
        params = [at_offset(p, 4) for p in p0]
        states = {s: [a.copy() for a in v] for s, v in s0.items()}
        run_case(case, hyper, params, grads, states, threads)
        assert_same_bits(params, states, want_p, want_s, (case.name, threads))
