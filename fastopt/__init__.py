"""fastopt: fused optimizer kernels in C++ for NumPy arrays.

The update functions (``sgd_``, ``adagrad_``, ``rmsprop_``, ``adam_``, ``adamw_``, ``nadam_``, ``radam_``,
``adamax_``, ``adadelta_``, ``asgd_``, ``rprop_``, ``lion_``, ``lamb_``) run one fused pass over
memory per update (``adafactor_``, whose row/column sums need three passes; ``muon_`` runs Muon: its fused
momentum and update passes, ``muon_momentum_`` and ``muon_apply_``, around a NumPy Newton-Schulz iteration),
in place, on one array or a whole list of arrays per call. ``fastopt.optim`` wraps them
in stateful optimizers. ``softmax_cross_entropy`` computes a stable softmax cross-entropy and its gradient in one
fused kernel, and ``linear_cross_entropy`` the same for ``hidden @ weight.T + bias`` chunk by chunk, without
the (N, V) logits; ``softmax``, ``log_softmax``, ``multiclass_svm_loss``, ``penalty`` and ``gradcheck`` complete the
course notes' training recipe. ``fastopt.reference`` is the plain NumPy witness they are all tested against.
"""

try:
    from fastopt._core import (
        adadelta_,
        adafactor_,
        adagrad_,
        adam_,
        adamax_,
        adamw_,
        asgd_,
        build_info,
        get_num_threads,
        lamb_,
        lion_,
        log_softmax,
        multiclass_svm_loss,
        muon_apply_,
        muon_momentum_,
        nadam_,
        penalty,
        radam_,
        rmsprop_,
        rprop_,
        set_cpu_isa,
        set_num_threads,
        sgd_,
        softmax,
        softmax_cross_entropy,
    )
except ImportError as error:  # pragma: no cover - only when the source tree shadows the install
    from fastopt._shadow import missing_core_message

    raise ImportError(missing_core_message(__file__)) from error

from fastopt import _core, _quantized, capi, cuda, init, optim, reference, schedules
from fastopt._environment import apply_environment
from fastopt._linear_cross_entropy import linear_cross_entropy
from fastopt._muon import muon_
from fastopt._quantized import QuantizedState, dequantize_blockwise, quantize_blockwise
from fastopt.gradcheck import gradcheck

apply_environment()
_core._register_quantized(QuantizedState, _quantized.SIGNED_MAP, _quantized.UNSIGNED_MAP)

__version__ = build_info()["version"]

__all__ = [
    "__version__",
    "QuantizedState",
    "adadelta_",
    "adafactor_",
    "adagrad_",
    "adam_",
    "adamax_",
    "adamw_",
    "asgd_",
    "build_info",
    "capi",
    "cuda",
    "dequantize_blockwise",
    "get_num_threads",
    "gradcheck",
    "init",
    "lamb_",
    "linear_cross_entropy",
    "lion_",
    "log_softmax",
    "multiclass_svm_loss",
    "muon_",
    "muon_apply_",
    "muon_momentum_",
    "nadam_",
    "optim",
    "penalty",
    "quantize_blockwise",
    "radam_",
    "reference",
    "rmsprop_",
    "rprop_",
    "schedules",
    "set_cpu_isa",
    "set_num_threads",
    "sgd_",
    "softmax",
    "softmax_cross_entropy",
]
