"""An unchanged reinstall compiles nothing (the first-minutes issue): pip builds in a new isolated
environment each time, and scikit-build-core then deletes CMakeCache.txt and CMakeFiles/ (the objects),
so the compiler cache (cmake/CompilerCache.cmake) must hit for every object, although pybind11 comes
from a different folder each time. This test does the same with two copies of pybind11 in two folders,
building two of the project's objects (one with pybind11, one without) in a real CMake build."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from repo_paths import ROOT  # noqa: E402
OBJECTS = ["CMakeFiles/_core.dir/csrc/python/build_info.cpp.o", "CMakeFiles/fastopt_cuda.dir/csrc/cuda/no_cuda.cpp.o"]


def tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (the test extra brings it)")
    return path


def stats(ccache, cache_dir):
    out = subprocess.run([ccache, "-d", cache_dir, "--print-stats"], capture_output=True, text=True, check=True)
    return {k: int(v) for k, v in (line.split("\t") for line in out.stdout.splitlines() if "\t" in line)
            if v.isdigit()}


def build(build_dir, pybind11_copy, cmake):
    subprocess.run([cmake, "-S", ROOT, "-B", build_dir, "-G", "Ninja", "-DFASTOPT_PYTHON=ON", "-DFASTOPT_CUDA=OFF",
                    "-DCMAKE_BUILD_TYPE=Release", f"-Dpybind11_DIR={pybind11_copy}/share/cmake/pybind11",
                    f"-DPython_EXECUTABLE={sys.executable}"],
                   check=True, capture_output=True, text=True)
    subprocess.run([cmake, "--build", build_dir, "--target", *OBJECTS], check=True, capture_output=True, text=True)


def test_rebuild_in_a_new_environment_hits_the_compiler_cache_for_every_object(tmp_path):
    cmake, ccache = tool("cmake"), tool("ccache")
    tool("ninja")
    pybind11 = pytest.importorskip("pybind11")
    source = os.path.dirname(pybind11.__file__)
    copies = []
    for env in ("env-a", "env-b"):  # two isolated build environments
        copy = tmp_path / env / "pybind11"
        shutil.copytree(source, copy)
        copies.append(str(copy))
    build_dir = str(tmp_path / "build")
    cache_dir = os.path.join(build_dir, "compiler-cache")

    build(build_dir, copies[0], cmake)
    first = stats(ccache, cache_dir)
    assert first["cache_miss"] == len(OBJECTS), first  # compiled through the cache

    # What scikit-build-core does when it meets a new isolated environment.
    os.remove(os.path.join(build_dir, "CMakeCache.txt"))
    shutil.rmtree(os.path.join(build_dir, "CMakeFiles"))
    subprocess.run([ccache, "-d", cache_dir, "--zero-stats"], check=True, capture_output=True)
    build(build_dir, copies[1], cmake)
    second = stats(ccache, cache_dir)
    # Direct hits: the command lines, pybind11's include folder among them, were the same as before.
    assert second["direct_cache_hit"] == len(OBJECTS) and second["cache_miss"] == 0, second
