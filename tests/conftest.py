"""Suite-wide reporting: say up front which optional peers are missing, so that their skipped tests are
not a surprise (torch is deliberately in no extra: see pyproject.toml)."""

from __future__ import annotations

import importlib.util

import pytest

# peer -> how to get it without pulling a GPU build onto a CPU-only machine
OPTIONAL_PEERS = {
    "torch": "install the build that fits this machine first; CPU only: `pip install torch==2.13.0` "
             "here, or torch's CPU wheel index elsewhere",
    "jax": "`pip install jax` (its CPU build)",
}


def missing_peers() -> dict:
    return {name: how for name, how in OPTIONAL_PEERS.items() if importlib.util.find_spec(name) is None}


def pytest_report_header(config):
    return [f"{name}: not installed, so the tests that compare with it skip; to run them, {how}"
            for name, how in missing_peers().items()]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for name, how in missing_peers().items():
        terminalreporter.write_line(f"note: {name} is not installed: the tests that compare with it were "
                                    f"skipped; to run them, {how}")


@pytest.fixture
def restore_settings():
    """Puts fastopt's instruction set and thread count back after a test that changes them (fastopt is imported
    here, not at the top: this file is read before any test and must not import it)."""
    import fastopt

    isa, threads = fastopt.build_info()["cpu_isa"], fastopt.get_num_threads()
    yield
    fastopt.set_cpu_isa(isa)
    fastopt.set_num_threads(threads)
