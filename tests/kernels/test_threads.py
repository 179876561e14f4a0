"""Python threads. The kernels release the GIL, so several Python threads run updates at once, each
possibly with its own OpenMP team. Eight threads stepping eight separate parameter sets at once must
give the bits of running them one after another. Two threads on the SAME arrays race on the user's
memory (documented in README: the result is undefined, but the process must not crash), which the
last test checks.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import fastopt
from fastopt import optim
from kernel_cases import CASES, draw_hyper, kernel_kwargs

THREADS = 8
# below and above the threading threshold (2 * 65536 elements), and a list mixing both
SIZES = [[1000], [300_007], [5, 200_003, 17], [131_072], [64], [70_000, 70_000], [1], [262_145]]
STEPS = 4


def workload(k):
    """Thread k's problem: its own optimizer, its own parameters and gradients."""
    case = CASES[k % len(CASES)]
    rng = np.random.default_rng(k)
    hyper = draw_hyper(case, list(case.configs)[-1], rng)
    dtype = np.float32 if k % 2 else np.float64
    params = [rng.standard_normal(n).astype(dtype) for n in SIZES[k]]
    states = {s: [np.full(n, case.initial_state(s, hyper), dtype) for n in SIZES[k]]
              for s in case.used_states(hyper)}
    grads = [[rng.standard_normal(n).astype(dtype) for n in SIZES[k]] for _ in range(STEPS)]

    def run():
        for t in range(STEPS):
            step = {"step": t + 1} if case.takes_step else {}
            case.kernel(params, grads[t], *[states.get(s) for s in case.states], **kernel_kwargs(case, hyper),
                        **step, skip_nonfinite=bool(k % 3 == 0))

    def result():
        return [a.tobytes() for a in params + [x for xs in states.values() for x in xs]]

    return run, result


def run_concurrently(runs):
    barrier = threading.Barrier(len(runs))
    errors = []

    def body(run):
        try:
            barrier.wait()
            run()
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=body, args=(run,)) for run in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("repeat", range(2))
def test_eight_threads_on_separate_arrays_match_sequential_runs(repeat):
    sequential = []
    for k in range(THREADS):
        run, result = workload(k)
        run()
        sequential.append(result())
    concurrent = [workload(k) for k in range(THREADS)]
    run_concurrently([run for run, _ in concurrent])
    for k, (_, result) in enumerate(concurrent):
        assert result() == sequential[k], f"thread {k} differs"


def test_eight_threads_with_optimizer_objects_match_sequential_runs():
    def make(k):
        rng = np.random.default_rng(k)
        params = [rng.standard_normal(n).astype(np.float32) for n in SIZES[k]]
        opt = [optim.SGD, optim.Adagrad, optim.RMSprop, optim.Adam, optim.AdamW][k % 5](params, lr=1e-3)
        grads = [[rng.standard_normal(n).astype(np.float32) for n in SIZES[k]] for _ in range(STEPS)]

        def run():
            for g in grads:
                opt.step(g, grad_scale=2.0, skip_nonfinite=True)
        return run, params

    sequential = []
    for k in range(THREADS):
        run, params = make(k)
        run()
        sequential.append([p.tobytes() for p in params])
    concurrent = [make(k) for k in range(THREADS)]
    run_concurrently([run for run, _ in concurrent])
    assert [[p.tobytes() for p in params] for _, params in concurrent] == sequential


def test_two_threads_on_the_same_arrays_do_not_crash():
    """A data race by the caller's design: the values are undefined, but shapes, dtypes and the
    process survive, and every element stays finite for this well-conditioned problem."""
    rng = np.random.default_rng(0)
    n = 300_000
    p = rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(2)]

    def runner(g):
        def run():
            for t in range(1, 6):
                fastopt.adamw_(p, g, m, v, lr=1e-3, step=t)
        return run

    run_concurrently([runner(grads[0]), runner(grads[1])])
    assert p.shape == (n,) and p.dtype == np.float32
    assert np.isfinite(p).all() and np.isfinite(m).all() and (v >= 0).all()
