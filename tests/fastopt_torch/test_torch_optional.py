"""torch stays optional: `import fastopt` does not import it, and `import fastopt.torch` without torch
says so clearly. Runs in subprocesses, so it needs no torch itself."""

from __future__ import annotations

import os
import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess:
    # From tests/, not the repository root, where the source folder fastopt/ would shadow the install.
    here = os.path.dirname(os.path.abspath(__file__))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=here)


def test_import_fastopt_does_not_import_torch():
    result = run("import sys, fastopt, fastopt.optim, fastopt.reference; "
                 "print('torch' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_fastopt_torch_without_torch_is_a_clear_import_error():
    # sys.modules["torch"] = None makes `import torch` fail as if torch were not installed.
    result = run("import sys; sys.modules['torch'] = None\n"
                 "try:\n    import fastopt.torch\n"
                 "except ImportError as e:\n    print('ImportError:', e)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ImportError: fastopt.torch needs PyTorch"), result.stdout
