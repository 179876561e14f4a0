"""fastopt inside jax.jit: the fused kernels as XLA FFI calls, optax-style optimizers and the fused loss.

- ``sgd``, ``adagrad``, ``rmsprop``, ``adam``, ``adamw``: GradientTransformation pairs (init, update)
  with optax's argument names (``learning_rate`` may be a schedule, a function of the update count),
  for optax.chain and anything that takes an optax optimizer; their numbers are torch.optim's.
- ``lion``, ``nadam``, ``radam``, ``adamax``, ``adadelta``, ``asgd``, ``rprop``, ``lamb``: the optimizers
  described as rules (fastopt/jax/_rules.py), the same pairs; fastopt.optim's numbers (on a GPU too).
- ``muon``: torch.optim.Muon for 2-D leaves (fastopt/jax/_muon.py): its two fused elementwise passes
  around a Newton-Schulz iteration in jnp.matmul.
- ``adafactor``: torch.optim.Adafactor (fastopt/jax/_adafactor.py): one kernel call for every leaf and its
  factored state, on the CPU.
- ``fused_apply(tx, grads, state, params) -> (params, state)``: parameters and state updated by one
  kernel call, in place under ``jax.jit(..., donate_argnums=...)``.
- ``softmax_cross_entropy(logits, labels, ...)``: the fused loss, its gradient from the same kernel call
  (custom VJP); ``softmax`` and ``log_softmax``.

Where optax computes differently (each function's docstring says more):

==========  ====================================================================================
sgd         as optax.sgd (plus torch's dampening, weight_decay, maximize)
adagrad     torch: ``g / (sqrt(sum) + eps)``, initial_accumulator_value=0, eps=1e-10;
            optax: ``g / sqrt(sum + eps)``, 0.1, 1e-7
rmsprop     torch: eps after the square root (only eps_in_sqrt=False), decay=0.99;
            optax: eps inside by default, decay=0.9, learning rate applied before its momentum
adam        the same quantity, rounded in torch's order; weight_decay is torch's L2 (coupled)
adamw       the same quantity; torch's default weight_decay=1e-2 (optax: 1e-4)
amsgrad     torch's max of the raw second moment (optax.amsgrad: of the bias-corrected one)
lion        the same quantity; fastopt's default weight_decay=0 (optax: 1e-3)
radam       torch adds eps to sqrt(v), optax to sqrt(v_hat)
lamb        the same quantity; fastopt's (apex's) default weight_decay=0.01 (optax: 0)
nadam       torch's momentum schedule (optax.nadam: Dozat's formula without it)
rprop       torch's; optax applies each step-size update one step later
adafactor   torch's Adafactor; optax.adafactor is Shazeer and Stern's full algorithm (another update)
muon        torch's Muon; optax.contrib.muon bias-corrects the momentum, adds eps to the norm, scales
            and decays otherwise (fastopt.jax.muon's docstring)
==========  ====================================================================================

optax's eps_root, mu_dtype, nesterov (adam/adamw), accumulator_dtype (sgd) and bias_correction
(rmsprop) are accepted only at their defaults, with a ValueError saying why otherwise.

Arrays: float32 and float64 (float16/bfloat16 parameters with float32 state on a GPU, when fastopt has
its CUDA backend), never converted. Everything known while tracing is checked then, and a refusal names
the argument and the leaf. A traced learning rate (a schedule's value) is checked when the step runs on
the CPU (a JaxRuntimeError, or a ValueError from JAX's fast dispatch path); on CUDA it is read on the
device and not checked.

This module needs jax (``pip install jax``) and a fastopt built with its FFI handlers
(``FASTOPT_JAX=ON pip install .``; see the README). ``import fastopt`` never imports jax.
"""

try:
    import jax  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised by a subprocess test without jax
    raise ImportError("fastopt.jax needs JAX, which is not installed: `pip install jax` "
                      "(fastopt itself works without it)") from error

from fastopt.jax import _ffi

_ffi.register()

from fastopt.jax._adafactor import AdafactorState, adafactor  # noqa: E402
from fastopt.jax._losses import log_softmax, softmax, softmax_cross_entropy  # noqa: E402
from fastopt.jax._muon import MuonState, muon  # noqa: E402
from fastopt.jax._rules import (  # noqa: E402
    AdadeltaState,
    AdamaxState,
    AsgdState,
    LambState,
    LionState,
    NadamState,
    RadamState,
    RpropState,
    adadelta,
    adamax,
    asgd,
    lamb,
    lion,
    nadam,
    radam,
    rprop,
)
from fastopt.jax._transforms import (  # noqa: E402
    AdagradState,
    AdamState,
    GradientTransformation,
    RmspropState,
    SgdState,
    adagrad,
    adam,
    adamw,
    fused_apply,
    rmsprop,
    sgd,
)

__all__ = [
    "AdadeltaState",
    "AdafactorState",
    "AdagradState",
    "AdamState",
    "AdamaxState",
    "AsgdState",
    "GradientTransformation",
    "LambState",
    "LionState",
    "MuonState",
    "NadamState",
    "RadamState",
    "RmspropState",
    "RpropState",
    "SgdState",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "fused_apply",
    "lamb",
    "lion",
    "log_softmax",
    "muon",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
    "softmax",
    "softmax_cross_entropy",
]
