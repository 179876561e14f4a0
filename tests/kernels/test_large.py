"""64-bit indexing: SGD and AdamW over 2**31 + 7 float32 elements in one array (opt-in: `large`).

    pytest -m large tests/kernels/test_large.py          (deselected by default: see pyproject's addopts)

One float32 array of 2**31 + 7 elements is 8.6 GB; AdamW needs four (34 GB), more than the RAM of
a typical test machine, so the arrays are np.memmap files in a temporary folder (FASTOPT_LARGE_DIR,
or the system's temporary folder). The files start sparse (zeros cost no disk); only the parameters
and states the kernel writes take disk space (about 9 GB for SGD, 26 GB for AdamW). Random values
are put at the start, just below element 2**31 and at the very end (across 2**31), and those slices are checked
against the NumPy reference afterwards: an index truncated to 32 bits would update the wrong
elements or none.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest

import fastopt
from fastopt import reference

N = 2**31 + 7
WINDOW = 4096
# the first elements, some just below 2**31, and the last ones (which straddle 2**31: N - 2**31 = 7)
STARTS = [0, 2**31 - 3 * WINDOW, N - WINDOW]


@pytest.fixture
def folder():
    base = os.environ.get("FASTOPT_LARGE_DIR", tempfile.gettempdir())
    path = tempfile.mkdtemp(prefix="fastopt-large-", dir=base)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def big(folder, name):
    return np.memmap(os.path.join(folder, name), dtype=np.float32, mode="w+", shape=(N,))


@pytest.mark.large
@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_update_beyond_2_31_elements(name, folder):
    written = 1 if name == "sgd" else 3
    need = written * N * 4 + (1 << 30)
    if shutil.disk_usage(folder).free < need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB free in {folder}")
    rng = np.random.default_rng(0)
    p, g = big(folder, "p"), big(folder, "g")
    states = [big(folder, "m"), big(folder, "v")] if name == "adamw" else []
    for s in STARTS:
        window = slice(s, s + WINDOW)
        p[window] = rng.standard_normal(WINDOW)
        g[window] = rng.standard_normal(WINDOW)
        if states:
            states[0][window] = rng.standard_normal(WINDOW) * 0.1
            states[1][window] = rng.uniform(0.01, 1.0, WINDOW)
    before = {s: [np.array(a[s:s + WINDOW]) for a in [p, g] + states] for s in STARTS}

    if name == "sgd":
        hyper = dict(lr=0.1, weight_decay=1e-2)
        fastopt.sgd_(p, g, **hyper)
    else:
        hyper = dict(lr=1e-3, weight_decay=1e-2, step=7)
        fastopt.adamw_(p, g, states[0], states[1], **hyper)

    for s in STARTS:
        window = slice(s, s + WINDOW)
        if name == "sgd":
            expected = reference.sgd(before[s][0], before[s][1], None, **hyper)
            actual = [p[window]]
        else:
            expected = reference.adamw(*before[s], None, **hyper)
            actual = [p[window], states[0][window], states[1][window]]
        for got, want in zip(actual, expected):
            np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=1e-7, err_msg=f"window at {s}")
    # an element outside the windows: zeros stay zeros (0 gradient, 0 state, 0 parameter)
    assert p[STARTS[1] - 1] == 0.0 and p[N - WINDOW - 1] == 0.0
