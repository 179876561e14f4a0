"""Threads and fork. Every case runs in a child Python process with a timeout, so that a regression (a
forked child waiting forever for libgomp's threads, a crash on an absurd thread count) fails instead of
hanging or killing the suite.

- libgomp's worker threads do not survive fork(): a process forked after a threaded kernel (fastopt's or
  torch's) must still run every kernel (fastopt runs them on the calling thread there), directly, in a
  multiprocessing 'fork' pool and in torch DataLoader workers, and get the same bits as the parent.
- The thread count is process-wide (libgomp's own is per thread) and capped at 1024 wherever it comes from:
  set_num_threads, FASTOPT_NUM_THREADS or OMP_NUM_THREADS.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import fastopt

pytestmark = [
    pytest.mark.skipif(not fastopt.build_info()["openmp"], reason="built without OpenMP"),
]
needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")

TIMEOUT = 120  # seconds for a whole child script; a hung child inside it is given 60

# Shared by the scripts: a threaded update (2^20 float32 elements: 16 chunks, far above the threading
# threshold) and a threaded cross-entropy (512 x 1024), each returning a digest of what it wrote.
PRELUDE = textwrap.dedent("""
    import hashlib, os, sys, time
    import numpy as np
    import fastopt

    def update():
        rng = np.random.default_rng(0)
        p, g = [rng.standard_normal(1 << 20).astype(np.float32) for _ in range(2)]
        m, v = np.zeros_like(p), np.zeros_like(p)
        fastopt.adam_(p, g, m, v, lr=1e-3, step=1)
        return hashlib.sha256(p.tobytes() + m.tobytes() + v.tobytes()).hexdigest()

    def loss():
        rng = np.random.default_rng(1)
        logits = rng.standard_normal((512, 1024)).astype(np.float32)
        labels = rng.integers(0, 1024, 512)
        value, grad = fastopt.softmax_cross_entropy(logits, labels)
        return hashlib.sha256(np.float64(value).tobytes() + grad.tobytes()).hexdigest()

    def in_child(work):
        # Runs work() in a forked child; returns its output, or exits 1 when the child hangs or fails.
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                os.write(write, work().encode())
                code = 0
            except BaseException as error:
                os.write(write, repr(error).encode())
                code = 2
            os._exit(code)
        os.close(write)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                out = os.read(read, 1 << 16).decode()
                if status != 0:
                    print("child failed:", status, out)
                    sys.exit(1)
                return out
            time.sleep(0.05)
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("the forked child hung")
        sys.exit(1)

    fastopt.set_num_threads(2)  # a team even on a one-CPU machine
""")


def run_script(body: str, **env) -> str:
    """Runs PRELUDE + body in a fresh interpreter; returns its stdout, failing on a timeout or an error."""
    script = PRELUDE + textwrap.dedent(body)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT,
                             env={**os.environ, **env}, cwd=os.path.dirname(__file__))
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"the script hung (> {TIMEOUT} s): {error.stdout!r} {error.stderr!r}")
    assert out.returncode == 0, f"rc {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr[-3000:]}"
    return out.stdout


@needs_fork
@pytest.mark.parametrize("work", ["update", "loss"])
def test_forked_child_runs_threaded_kernels(work):
    """The issue's case: a threaded call, fork, the same call in the child (it hung). The child computes
    on its calling thread and gets the parent's bits."""
    out = run_script(f"""
        parent = {work}()
        child = in_child({work})
        print(parent == child, fastopt.get_num_threads())
    """)
    assert out.split() == ["True", "2"]


@needs_fork
def test_forked_child_runs_serially_and_says_so():
    """get_num_threads is the effective count: 1 in a forked child, even after set_num_threads there
    (libgomp cannot start a team in it), while the parent keeps its count."""
    out = run_script("""
        expected = update()
        def child():
            fastopt.set_num_threads(4)
            return f"{fastopt.get_num_threads()},{fastopt.build_info()['num_threads']},{update() == expected}"
        print(in_child(child), fastopt.get_num_threads())
    """)
    assert out.split() == ["1,1,True", "2"]


@needs_fork
def test_forked_child_after_torch_threads():
    """The pool a forked child lacks may be torch's: torch ships libgomp.so.1 too, and the process loads it
    once, so a threaded torch op before fork broke fastopt's first threaded kernel in the child."""
    pytest.importorskip("torch")
    out = run_script("""
        import torch
        expected = update()
        torch.set_num_threads(2)
        (torch.randn(1 << 22) * 2 + 1).sum()  # torch's own OpenMP team
        print(in_child(update) == expected)
    """)
    assert out.split() == ["True"]


@needs_fork
def test_multiprocessing_fork_pool_after_threaded_kernel():
    out = run_script("""
        import multiprocessing

        def work(_):
            return update(), loss()

        expected = (update(), loss())
        with multiprocessing.get_context("fork").Pool(2) as pool:
            results = pool.map_async(work, range(4)).get(timeout=60)
        print(all(r == expected for r in results))
    """)
    assert out.split() == ["True"]


@needs_fork
def test_torch_dataloader_fork_workers_after_threaded_kernel():
    pytest.importorskip("torch")
    out = run_script("""
        import torch
        from torch.utils.data import DataLoader, Dataset

        class Updates(Dataset):
            def __len__(self):
                return 4

            def __getitem__(self, i):
                return update() + loss()

        expected = update() + loss()
        # (DataLoader runs torch.set_num_threads(1) in each worker; a worker that asks fastopt for threads
        # must not hang either.)
        loader = DataLoader(Updates(), batch_size=None, num_workers=2, multiprocessing_context="fork", timeout=60,
                            worker_init_fn=lambda _: fastopt.set_num_threads(2))
        print(all(item == expected for item in loader))
    """)
    assert out.split() == ["True"]


def test_huge_omp_num_threads_is_capped():
    """OMP_NUM_THREADS=100000 crashed the first threaded kernel (libgomp cannot start that many threads)."""
    script = ("import fastopt, numpy as np\n"
              "print(fastopt.get_num_threads())\n"
              "a = [np.zeros(1 << 22, np.float32) for _ in range(4)]\n"
              "fastopt.adam_(*a, lr=1e-3, step=1)\n"
              "print('ran')\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT,
                         env={**os.environ, "OMP_NUM_THREADS": "100000"}, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["1024", "ran"]


def test_huge_fastopt_num_threads_is_capped_with_a_warning():
    script = ("import warnings\n"
              "with warnings.catch_warnings(record=True) as caught:\n"
              "    warnings.simplefilter('always')\n"
              "    import fastopt\n"
              "print(fastopt.get_num_threads(), [str(w.message) for w in caught if 'FASTOPT_NUM_THREADS' in str(w.message)])\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=TIMEOUT,
                         env={**os.environ, "FASTOPT_NUM_THREADS": "100000"}, cwd=os.path.dirname(__file__))
    assert out.returncode == 0, out.stderr[-3000:]
    count, _, warning = out.stdout.partition(" ")
    assert count == "1024" and "cap" in warning, out.stdout


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads through /proc (Linux)")
@pytest.mark.parametrize("omp, setting", [("4", 1), ("1", 3)])
def test_set_num_threads_reaches_every_python_thread(omp, setting):
    """libgomp's count is per thread: set_num_threads in the main thread did not reach a kernel called from
    another Python thread, which used OMP_NUM_THREADS instead. The worker's kernel starts setting - 1 new OS
    threads (libgomp keeps a team's threads while the thread that started it lives) and gets the bits of
    a serial run."""
    out = run_script(f"""
        import threading
        fastopt.set_num_threads(1)
        serial = update(), loss()
        fastopt.set_num_threads({setting})
        result = {{}}

        def worker():
            before = len(os.listdir("/proc/self/task"))
            bits = update(), loss()
            result["new_threads"] = len(os.listdir("/proc/self/task")) - before
            result["same"] = bits == serial

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        print(result["new_threads"], result["same"], fastopt.get_num_threads())
    """, OMP_NUM_THREADS=omp)
    new_threads, same, count = out.split()
    assert same == "True" and count == str(setting)
    if setting == 1:
        assert new_threads == "0"
    else:
        assert int(new_threads) >= 1
