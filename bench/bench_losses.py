"""The losses part of fastopt's benchmark suite: softmax cross-entropy forward + backward (gradient
written in place into the logits, and into a separate buffer) and softmax, float32, fastopt against
the NumPy reference and torch (F.cross_entropy + backward on a leaf tensor). The same as
``python -m fastopt bench --part losses``, and the same options (see --help); the code lives in
fastopt/bench/.

    python bench/bench_losses.py [--shapes 4096x32000 32768x1000 512x50257] [--rounds 5] [--json out.json] [--no-numpy]
"""

import sys

from fastopt.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="bench/bench_losses.py", part="losses"))
