"""The optimizer part of fastopt's benchmark suite: every optimizer update (float32) from 1K to 64M
elements, fastopt against the NumPy reference and torch's for-loop, foreach and fused implementations,
plus AdamW over GPT-2 small's 148 parameter tensors in one call. The same as
``python -m fastopt bench --part optimizers``, and the same options (see --help); the code lives in
fastopt/bench/.

    python bench/bench_optimizers.py [--sizes 1K 1M 16M] [--quick] [--rounds N] [--json out.json] [--no-torch]
"""

import sys

from fastopt.bench.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="bench/bench_optimizers.py", part="optimizers"))
