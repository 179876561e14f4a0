"""Peak extra memory of one linear cross-entropy implementation in one call, on the CPU.

torch keeps no statistics of its CPU allocations and tracemalloc sees only NumPy's, so each implementation
runs in a fresh child process of its own: the inputs are made, a small call warms up the thread pools and
BLAS buffers, the kernel's record of the peak resident set is reset (writing 5 to /proc/self/clear_refs), and
that peak (VmHWM) over one full call, less the resident set before it (VmRSS), is the call's peak extra
memory. glibc is told to map every block of 64 KiB or more on its own and return it when freed
(MALLOC_MMAP_THRESHOLD_), so that a block freed earlier cannot be reused unseen. Every implementation
allocates its gradients in the call here (fastopt's bench timing writes into buffers made once; here it
makes new ones, as autograd does), so the figures compare alike.

    python -m fastopt.bench.linear_memory IMPL N D V      prints {"extra": bytes}
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Optional


def measure(impl: str, n: int, d: int, v: int, timeout: float = 600) -> Optional[int]:
    """Bytes, or None where it cannot be measured (not Linux, or the child failed)."""
    if not sys.platform.startswith("linux"):
        return None
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    # The child runs beside the fastopt this process imported: `python -m` puts the working folder first
    # on sys.path, and in a repository root the source folder (without its compiled module) would shadow it.
    beside = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        done = subprocess.run([sys.executable, "-m", "fastopt.bench.linear_memory", impl, str(n), str(d), str(v)],
                              capture_output=True, text=True, timeout=timeout, env=env, cwd=beside)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        return None
    return int(json.loads(done.stdout.strip().splitlines()[-1])["extra"])


def _impl(name: str, work):
    from fastopt.bench.backends import FastoptCPU, TorchCPU

    impls = dict(FastoptCPU().linear_loss(work, preallocated=False))
    if name != "fastopt":
        impls.update(TorchCPU().linear_loss(work))
    return impls[name]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_extra(fn) -> int:
    """Bytes: the peak resident set during fn() less the resident set before it (Linux)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) * 1024


def main(argv) -> int:
    from fastopt.bench.workloads import linear_loss_work

    name, n, d, v = argv[0], int(argv[1]), int(argv[2]), int(argv[3])
    # Threads, the BLAS's per-thread buffers (allocated at the first product big enough to be threaded),
    # lazy imports: not the call's memory. Small logits (at most 512 x 4096), the full width D.
    small = linear_loss_work(min(n, 512), d, min(v, 4096), seed=1)
    _impl(name, small)()
    work = linear_loss_work(n, d, v)
    fn = _impl(name, work)
    print(json.dumps({"extra": peak_extra(fn)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
