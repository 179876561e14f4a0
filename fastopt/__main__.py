"""``fastopt`` (also ``python -m fastopt``): the library at work. ``fastopt`` alone runs the demo
(race + training + a short benchmark, with PNG plots); ``fastopt race|train|bench|info`` run one
part; ``fastopt --help`` lists them. The commands live in fastopt/demo/."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    from fastopt.demo.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
