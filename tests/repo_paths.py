"""Where things are, for the tests that read the repository's files or start Python in a subprocess (the test
files sit one folder down, in their area's folder)."""

from __future__ import annotations

import os

# tests/: the helper modules shared by the areas (kernel_cases, interop_cases, ...)
TESTS = os.path.dirname(os.path.abspath(__file__))
# the repository root: never a Python subprocess's working directory, where the source folder fastopt/ would
# shadow the installed package
ROOT = os.path.dirname(TESTS)


def env_with_helpers(env: dict) -> dict:
    """`env` for a Python subprocess that imports the shared helper modules (a script's own folder is on its
    path, tests/ is not)."""
    paths = [TESTS] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    return dict(env, PYTHONPATH=os.pathsep.join(paths))
