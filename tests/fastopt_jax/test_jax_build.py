"""How a build gets fastopt.jax's FFI handlers: FASTOPT_JAX=ON makes pip's isolated build environment
fetch jaxlib (pyproject.toml's scikit-build-core override), and CMake's FASTOPT_JAX = AUTO | ON | OFF
builds them against jaxlib's headers where the building Python has jaxlib (cmake/FastoptJax.cmake).
Needs no jax itself: the CMake checks configure with a Python that has no jaxlib (a bare venv)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv

import pytest

from repo_paths import ROOT  # noqa: E402


def build_requirements(fastopt_jax):
    """What scikit-build-core asks pip to install into the isolated build environment."""
    pytest.importorskip("scikit_build_core")
    env = {k: v for k, v in os.environ.items() if k != "FASTOPT_JAX"}
    if fastopt_jax is not None:
        env["FASTOPT_JAX"] = fastopt_jax
    code = "from scikit_build_core.build import get_requires_for_build_wheel as g; print(repr(g()))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("value,fetches", [("ON", True), ("on", True), ("AUTO", False), ("OFF", False),
                                           (None, False)])
def test_only_fastopt_jax_on_fetches_jaxlib_for_the_build(value, fetches):
    requirements = build_requirements(value)
    assert any(r.startswith("jaxlib") for r in requirements) == fetches, requirements


def configure(tmp_path, python, option):
    """Configures (no build) with FASTOPT_JAX=option and `python`; returns the CMake run."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed (the test extra brings it)")
    pybind11 = pytest.importorskip("pybind11")
    build_dir = tmp_path / f"build-{option}-{os.path.basename(os.path.dirname(os.path.dirname(python)))}"
    return subprocess.run([cmake, "-S", ROOT, "-B", str(build_dir), "-DFASTOPT_PYTHON=ON", "-DFASTOPT_CUDA=OFF",
                           "-DFASTOPT_COMPILER_CACHE=OFF", f"-DFASTOPT_JAX={option}",
                           f"-Dpybind11_DIR={pybind11.get_cmake_dir()}", f"-DPython_EXECUTABLE={python}"],
                          capture_output=True, text=True, timeout=300)


def test_cmake_builds_the_handlers_only_where_the_python_has_jaxlib(tmp_path):
    bare = tmp_path / "no-jaxlib"
    venv.create(bare, with_pip=False)  # a Python without jaxlib (nor anything else)
    python = str(bare / "bin" / "python")
    if not os.path.exists(python):
        pytest.skip("venv layout without bin/python")
    required = configure(tmp_path, python, "ON")
    assert required.returncode != 0
    assert "FASTOPT_JAX=ON but" in required.stderr and "has no jaxlib" in required.stderr, required.stderr
    auto = configure(tmp_path, python, "AUTO")
    assert auto.returncode == 0, auto.stderr
    assert "fastopt.jax's FFI handlers are not built" in auto.stdout
    bad = configure(tmp_path, python, "MAYBE")
    assert bad.returncode != 0 and "FASTOPT_JAX must be AUTO, ON or OFF, not 'MAYBE'" in bad.stderr
    try:
        import jaxlib  # noqa: F401
    except ImportError:
        return
    found = configure(tmp_path, sys.executable, "AUTO")
    assert found.returncode == 0, found.stderr
    assert "fastopt.jax's FFI handlers, with the headers of jaxlib" in found.stdout
