"""fastopt's benchmark suite (``python -m fastopt bench``), one module per job:

- workloads.py: what one call computes (arrays, hyperparameters) and its bytes model (TRAFFIC)
- backends.py:  who computes it: fastopt, the NumPy reference, torch (the one place a CUDA backend joins)
- cases.py:     a workload with every backend's callables and the bandwidth probe, built on demand
- timing.py:    warm-up, calls per round, medians of interleaved rounds
- suite.py:     runs the cases in order and prints their tables
- report.py:    rows, tables, machine info, the JSON file
- plot.py:      the PNG figure (matplotlib optional)
- progress.py:  the progress bar on stderr
- cli.py:       the options shared by ``python -m fastopt bench`` and the scripts in bench/
"""

from fastopt.bench.cli import main
from fastopt.bench.timing import interleaved_medians
from fastopt.bench.workloads import TRAFFIC

__all__ = ["TRAFFIC", "interleaved_medians", "main"]
