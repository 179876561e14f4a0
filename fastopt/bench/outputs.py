"""Output paths, checked before any work starts: a run that measures for a minute and then cannot write
its JSON or picture has wasted the minute. Used by ``fastopt bench`` (--json, --plot, --out) and the
demo's commands (--out). A bad path raises OutputPathError, whose message names the option and says
what is wrong; the command lines turn it into a usage error (exit status 2)."""

from __future__ import annotations

import os
import tempfile


class OutputPathError(ValueError):
    pass


def _check_writable_folder(folder: str, option: str, path: str) -> None:
    """Write and remove a temporary file in folder (os.access is not enough: root passes it for
    read-only file systems and /proc)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputPathError(f"{option} {path}: cannot write in the folder {folder}: "
                              f"{error.strerror or error}") from None


def ensure_folder(path: str, option: str = "--out") -> str:
    """Create the folder `path` if missing (with its parents) and check that files can be written in it;
    returns path."""
    if not path:
        raise OutputPathError(f"{option}: the folder name is empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputPathError(f"{option} {path}: exists and is not a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"{option} {path}: cannot create the folder: {error.strerror or error}") from None
    _check_writable_folder(path, option, path)
    return path


def check_file(path: str, option: str, suffixes=None) -> str:
    """Check that the file `path` can be written: its folder exists (it is not created: a typo in a
    folder name should not scatter folders) and takes new files, the path is not a folder, an existing
    file is writable, and, with `suffixes`, that the name ends in one of them. Nothing is written."""
    if not path:
        raise OutputPathError(f"{option}: the file name is empty")
    if os.path.isdir(path):
        raise OutputPathError(f"{option} {path}: is a folder; give a file name, e.g. {os.path.join(path, 'bench.json')}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputPathError(f"{option} {path}: the folder {folder} does not exist (create it first, "
                              f"or choose another path)")
    if suffixes is not None:
        suffix = os.path.splitext(path)[1].lower().lstrip(".")
        if suffix not in suffixes:
            raise OutputPathError(f"{option} {path}: unknown file type {('.' + suffix) if suffix else '(none)'}; "
                                  f"use one of {', '.join('.' + s for s in sorted(suffixes))}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OutputPathError(f"{option} {path}: the file exists and is not writable")
    _check_writable_folder(folder, option, path)
    return path


def image_suffixes() -> set:
    """File types matplotlib can save (png, pdf, svg, ...); an empty set without matplotlib."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        return set()
    return set(FigureCanvasBase.get_supported_filetypes())
