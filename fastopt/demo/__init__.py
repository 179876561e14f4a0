"""The jobs of the ``fastopt`` command: ``demo`` (the default: race + train + a short bench, with
pictures), ``race``, ``train``, ``bench`` and ``info``. One module per job; cli.py parses and runs
them. The pictures need the ``demo`` extra (matplotlib, scikit-learn); ``require`` says so plainly."""

from __future__ import annotations

import importlib
from typing import Optional

# import name -> pip name, of the demo extra's packages
EXTRA = {"matplotlib": "matplotlib", "sklearn": "scikit-learn"}


def require(*modules: str) -> Optional[str]:
    """None when every module imports; otherwise the message to print (naming the extra)."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(EXTRA.get(name, name))
    if not missing:
        return None
    return (f"fastopt: this command needs {' and '.join(missing)}, which the 'demo' extra installs:\n"
            f"    pip install \"fastopt[demo]\"      (from a source checkout: pip install \".[demo]\")")
