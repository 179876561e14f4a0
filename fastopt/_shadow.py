"""Why `import fastopt` found no compiled module: most often the repository's source folder fastopt/
(which has none) is first on sys.path because Python was started in the repository root (`python -m
fastopt`, `python -m pytest`), while a built fastopt is installed all the same. Say that first."""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from typing import Optional


def has_compiled_core(folder: str) -> bool:
    """Whether a fastopt folder holds the compiled module (_core.<abi>.so / .pyd, not the .pyi stub)."""
    return any(os.path.exists(os.path.join(folder, "_core" + suffix)) for suffix in EXTENSION_SUFFIXES)


def installed_elsewhere(source_init: str) -> Optional[str]:
    """The folder of another fastopt package with a compiled module on sys.path, or None."""
    source_dir = os.path.dirname(os.path.realpath(source_init))
    for entry in sys.path:
        candidate = os.path.join(entry or os.getcwd(), "fastopt")
        if os.path.realpath(candidate) == source_dir or not os.path.isdir(candidate):
            continue
        if has_compiled_core(candidate):
            return candidate
    return None


def missing_core_message(source_init: str) -> str:
    source_dir = os.path.dirname(os.path.realpath(source_init))
    installed = installed_elsewhere(source_init)
    if installed is not None:
        return (f"the source folder {source_dir} (no compiled module) shadows the installed fastopt in "
                f"{installed}: Python put the current folder first on sys.path. Run the `fastopt` command "
                f"and plain `pytest` instead of `python -m ...`, or start Python outside the repository root.")
    return ("fastopt's compiled module (fastopt._core) is missing: fastopt is not installed. Install it with "
            "`pip install .` from the repository root; then run the `fastopt` command and plain `pytest` "
            f"there (the source folder {source_dir} has no compiled module and would shadow the install "
            "under `python -m ...`).")
