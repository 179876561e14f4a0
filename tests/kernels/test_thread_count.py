"""Results do not depend on the thread count: the same update run with 1, 2 and 3 OpenMP threads
(in fresh processes, since OpenMP reads OMP_NUM_THREADS once) gives the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import fastopt
import repo_paths

SCRIPT = textwrap.dedent("""
    import hashlib, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from kernel_cases import CASES, draw_hyper, kernel_kwargs

    digest = hashlib.sha256()
    for case in CASES:
        for dtype in (np.float32, np.float64):
            config = list(case.configs)[-1]
            rng = np.random.default_rng(42)
            hyper = draw_hyper(case, config, rng)
            used = case.used_states(hyper)
            sizes = [300007, 5, 200003]          # above the threading threshold, ragged chunks
            params = [rng.standard_normal(n).astype(dtype) for n in sizes]
            states = {{s: [np.full(n, case.initial_state(s, hyper), dtype) for n in sizes] for s in used}}
            for t in range(1, 4):
                grads = [rng.standard_normal(n).astype(dtype) for n in sizes]
                step = {{"step": t}} if case.takes_step else {{}}
                case.kernel(params, grads, *[states.get(s) for s in case.states],
                            **kernel_kwargs(case, hyper), **step)
            for a in params + [a for arrays in states.values() for a in arrays]:
                digest.update(a.tobytes())
    print(digest.hexdigest())
""")


def run_with_threads(threads: int) -> str:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    script = SCRIPT.format(tests=repo_paths.TESTS)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(__file__))
    return out.stdout.strip()


@pytest.mark.skipif(not fastopt.build_info()["openmp"], reason="built without OpenMP")
def test_results_are_bit_identical_for_any_thread_count():
    digests = {threads: run_with_threads(threads) for threads in (1, 2, 3)}
    assert len(set(digests.values())) == 1, digests
