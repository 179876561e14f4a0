// LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
// Algorithm 2), with the conventions of NVIDIA apex's FusedLAMB (apex/optimizers/fused_lamb.py,
// csrc/multi_tensor_lamb.cu) in its decoupled mode (adam_w_mode=True, grad_averaging=True), t the
// 1-based step:
//
//   g = maximize ? -grad : grad;  clipping (max_grad_norm given): g = g / clip, where norm is the L2
//       norm of every gradient of the call together and clip = norm > max_grad_norm ?
//       norm / max_grad_norm : 1 (apex's division by the clipped ratio, not a product by its inverse)
//   m = b1 * m + (1 - b1) * g;   v = b2 * v + (1 - b2) * g * g
//   bias_correction: m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t); else m_hat = m, v_hat = v
//   u = m_hat / (sqrt(v_hat) + eps) + wd * p
//   r = ||p|| / ||u|| over the parameter tensor (1 where either norm is 0)
//   p = p - (lr * r) * u
//
// The trust ratio applies to every tensor, as in the paper and apex's use_nvlamb=True (apex's default
// leaves tensors of groups with weight_decay == 0 at r = 1). No gradient-averaging switch (apex's
// grad_averaging=False, m = b1 * m + g) and no L2 mode. Defaults lr=1e-3, betas=(0.9, 0.999),
// eps=1e-6, weight_decay=0.01, bias_correction=True, max_grad_norm=None (no clipping; apex's default
// is 1.0; 0 is refused: it would zero every gradient). Operands {param, grad, exp_avg, exp_avg_sq}.
//
// A rule with per-tensor sums (tensor_sums.h): pass 1 updates m and v and sums p^2 and u^2 per tensor
// without writing u; pass 2 recomputes u from the new m, v and the unchanged p (the same function,
// so the same bits) and writes p.
#pragma once

#include <cmath>
#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/rule.h"
#include "fastopt/scalar_math.h"
#include "fastopt/tensor_sums.h"

namespace fastopt {

struct LambHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool bias_correction;
  double max_grad_norm;  // NaN: no clipping
  bool maximize;
  int64_t step;
  GradScaling scaling;
};

template <typename M>
struct LambScalars {
  M beta1, one_minus_beta1, beta2, one_minus_beta2, bias_correction1, bias_correction2, eps, weight_decay,
      grad_sign;
};

struct LambRule : RuleDefaults {
  static constexpr const char* kName = "lamb";
  static constexpr const char* kSummary =
      "Fused LAMB step (You et al. 2020, layer-wise trust ratio as in apex's FusedLAMB), in place:\n"
      "m = beta1 * m + (1 - beta1) * g; v = beta2 * v + (1 - beta2) * g * g;\n"
      "u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p; p -= lr * (||p|| / ||u||) * u per tensor\n"
      "(ratio 1 where either norm is 0). max_grad_norm: g /= max(1, ||all grads|| / max_grad_norm).\n"
      "The norms are deterministic (the same bits for any thread count). exp_avgs and exp_avg_sqs start at zero.";
  static constexpr int kOperands = 4;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {
      {"params", nullptr}, {"grads", nullptr}, {"exp_avgs", nullptr}, {"exp_avg_sqs", nullptr, true}};
  static constexpr int kHypers = 8;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"lr", HyperRule::NonNegative, 1e-3, "learning rate"},
      {"beta1", HyperRule::UnitInterval, 0.9, "decay of exp_avg"},
      {"beta2", HyperRule::UnitInterval, 0.999, "decay of exp_avg_sq"},
      {"eps", HyperRule::Positive, 1e-6, "added to sqrt(v_hat)"},
      {"weight_decay", HyperRule::NonNegative, 0.01, "decoupled: u += weight_decay * p, inside the trust ratio"},
      {"bias_correction", HyperRule::Flag, 1.0, "divide m and v by 1 - beta^step"},
      {"max_grad_norm", HyperRule::OptionalNonNegative, 0.0,
       "> 0: clip the call's global gradient norm to it (None: no clipping)"},
      {"maximize", HyperRule::Flag, 0.0, "ascend the gradient"},
  };
  static constexpr bool kUsesStep = true;
  // A device lr or step (CUDA): the constants and the per-tensor factor are computed on the device.

  using Hyper = LambHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    return {v[0], v[1], v[2], v[3], v[4], v[5] != 0.0, v[6], v[7] != 0.0, step, scaling};
  }

  static int variant(const Hyper&) { return 0; }
  static constexpr unsigned used(int) { return 0b1111u; }

  // ---- tensor_sums.h
  static constexpr int kTensorSums = 2;  // sum p^2, sum u^2
  static constexpr unsigned first_used(int) { return 0b1111u; }
  static constexpr unsigned first_written(int) { return 0b1100u; }  // m, v
  static constexpr unsigned second_used(int) { return 0b1101u; }    // p, m, v (not the gradient)
  static constexpr unsigned second_written(int) { return 0b0001u; }
  static double clip_norm(const Hyper& h) { return std::isnan(h.max_grad_norm) ? 0.0 : h.max_grad_norm; }

  template <typename M>
  using Consts = LambScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    const double t = double(h.step);
    const double bc1 = h.bias_correction ? 1.0 - pow(h.beta1, t) : 1.0;
    const double bc2 = h.bias_correction ? 1.0 - pow(h.beta2, t) : 1.0;
    return {M(h.beta1), M(1.0 - h.beta1), M(h.beta2),          M(1.0 - h.beta2),           M(bc1),
            M(bc2),     M(h.eps),         M(h.weight_decay), M(h.maximize ? -1.0 : 1.0)};
  }

  // u from the updated m and v and the parameter (both passes call it: the same bits).
  template <typename M>
  static FASTOPT_RULE_FN M direction(const Consts<M>& s, M p, M m, M v) {
    const M m_hat = m / s.bias_correction1;
    const M v_hat = v / s.bias_correction2;
    return m_hat / (sqrt_(v_hat) + s.eps) + s.weight_decay * p;
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void gather(const Consts<M>& s, M (&e)[kOperands], double (&terms)[kTensorSums]) {
    const M p = e[0];
    M& m = e[2];
    M& v = e[3];
    const M g = e[1] * s.grad_sign;
    m = s.beta1 * m + s.one_minus_beta1 * g;
    v = s.beta2 * v + s.one_minus_beta2 * (g * g);
    const M u = direction(s, p, m, v);
    terms[0] = double(p) * double(p);
    terms[1] = double(u) * double(u);
  }

  // lr * r, r = ||p|| / ||u|| (1 where either is 0); on the host (CPU loops) or the device (CUDA).
  static FASTOPT_RULE_FN double factor(const Hyper& h, const double (&sums)[kTensorSums]) {
    const double p_norm = sqrt_(sums[0]);
    const double u_norm = sqrt_(sums[1]);
    const double ratio = (p_norm != 0.0 && u_norm != 0.0) ? p_norm / u_norm : 1.0;
    return h.lr * ratio;
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void finish(const Consts<M>& s, M factor, M (&e)[kOperands]) {
    M& p = e[0];
    const M u = direction(s, p, e[2], e[3]);
    p = p - factor * u;
  }

  template <typename H>
  static HyperProblem check_more(const H& h) {
    if (h.max_grad_norm == 0.0) {
      return {"max_grad_norm", "must be > 0, or None for no clipping (0 would zero every gradient)", 0.0, true};
    }
    return {};
  }
};

}  // namespace fastopt
