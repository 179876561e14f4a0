"""LAMB (You et al. 2020, Algorithm 2), with apex FusedLAMB's conventions: Adam's moments with bias
correction, a per-tensor trust ratio ``||p|| / ||u||`` and optional clipping of the global gradient norm.
The kernel is csrc/include/fastopt/lamb.h (a rule with per-tensor sums, fastopt/tensor_sums.h)."""

from fastopt.rules._spec import RuleSpec, State

SPEC = RuleSpec(
    name="LAMB",
    kernel="lamb_",
    defaults=dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01, bias_correction=True,
                  max_grad_norm=None),
    state=(State("exp_avg", "exp_avgs"), State("exp_avg_sq", "exp_avg_sqs")),
    kernel_args=lambda group: dict(lr=group["lr"], beta1=group["betas"][0], beta2=group["betas"][1], eps=group["eps"],
                                   weight_decay=group["weight_decay"], bias_correction=group["bias_correction"],
                                   max_grad_norm=group["max_grad_norm"], maximize=group["maximize"]),
    uses_step=True,
    doc="LAMB: Adam's moments, ``u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p`` and "
        "``p -= lr * (||p|| / ||u||) * u`` per parameter (ratio 1 where either norm is 0). ``max_grad_norm`` "
        "(None: off) divides the gradients by ``max(1, norm / max_grad_norm)``, the norm taken over the "
        "parameters of one kernel call: a param group (and, in fastopt.torch, one device and dtype of it). "
        "State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``.",
    torch_keywords=dict(maximize=False),
)
