"""fastopt: fused optimizer kernels in C++ for NumPy arrays.

The update functions (``sgd_``, ``adagrad_``, ``rmsprop_``, ``adam_``, ``adamw_``) run one fused pass over
memory per update, in place, on one array or a whole list of arrays per call. ``fastopt.optim`` wraps them
in stateful optimizers; ``fastopt.reference`` is the plain NumPy witness they are tested against.
"""

from fastopt._core import adagrad_, adam_, adamw_, build_info, rmsprop_, sgd_

__version__ = build_info()["version"]

__all__ = [
    "__version__",
    "adagrad_",
    "adam_",
    "adamw_",
    "build_info",
    "rmsprop_",
    "sgd_",
]
