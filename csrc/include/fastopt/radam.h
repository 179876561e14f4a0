// RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond"): Adam whose
// adaptive step is switched on, and rectified, once the variance of the adaptive rate is tractable.
// torch.optim.RAdam's numbers (t the 1-based step):
//
//   g = maximize ? -grad : grad;  weight decay: L2 (g += wd * p) or decoupled (p *= 1 - lr * wd)
//   m = lerp(m, g, 1 - b1);   v = b2 * v + (1 - b2) * g * g
//   rho_inf = 2 / (1 - b2) - 1;   rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
//   rho_t > 5:  p = p - (m / (1 - b1^t)) * lr * (sqrt(1 - b2^t) / (sqrt(v) + eps)) * r_t,
//               r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
//   otherwise:  p = p - (m / (1 - b1^t)) * lr
//
// Operands {param, grad, exp_avg, exp_avg_sq}. Whether the step is rectified is a property of the
// call (of t), so it is part of the variant: the host must know the step (kDeviceStep = false).
#pragma once

#include <cmath>
#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/rule.h"
#include "fastopt/scalar_math.h"
#include "fastopt/weight_decay.h"

namespace fastopt {

struct RadamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled, maximize;
  int64_t step;
  GradScaling scaling;
};

// rho_t of RAdam and whether this step is rectified (rho_t > 5).
FASTOPT_HD double radam_rho_t(double beta2, double t) {
  const double rho_inf = 2.0 / (1.0 - beta2) - 1.0;
  return rho_inf - 2.0 * t * pow(beta2, t) / (1.0 - pow(beta2, t));
}

template <typename M>
struct RadamScalars {
  M w, one_minus_w, beta2, one_minus_beta2, bias_correction1, lr, eps, bias_correction2_sqrt, rect;
  M weight_decay, decay_keep, grad_sign;
  bool small_w;
};

struct RadamRule : RuleDefaults {
  static constexpr const char* kName = "radam";
  static constexpr const char* kSummary =
      "Fused RAdam step (torch.optim.RAdam semantics: rectified Adam), in place.\n"
      "exp_avgs and exp_avg_sqs start at zero.";
  static constexpr int kOperands = 4;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {
      {"params", nullptr}, {"grads", nullptr}, {"exp_avgs", nullptr}, {"exp_avg_sqs", nullptr, true}};
  static constexpr int kHypers = 7;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"lr", HyperRule::NonNegative, 1e-3, "learning rate"},
      {"beta1", HyperRule::UnitInterval, 0.9, "decay of exp_avg"},
      {"beta2", HyperRule::UnitInterval, 0.999, "decay of exp_avg_sq"},
      {"eps", HyperRule::Positive, 1e-8, "added to sqrt(exp_avg_sq)"},
      {"weight_decay", HyperRule::NonNegative, 0.0, "L2, or decoupled with decoupled_weight_decay"},
      {"decoupled_weight_decay", HyperRule::Flag, 0.0, "p *= 1 - lr * weight_decay instead of L2"},
      {"maximize", HyperRule::Flag, 0.0, "ascend the gradient"},
  };
  static constexpr bool kUsesStep = true;
  static constexpr bool kDeviceStep = false;

  using Hyper = RadamHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    return {v[0], v[1], v[2], v[3], v[4], v[5] != 0.0, v[6] != 0.0, step, scaling};
  }

  // variant = weight decay mode (weight_decay.h) + 3 * rectified
  static constexpr int kVariants = 6;
  static int variant(const Hyper& h) {
    return weight_decay_mode(h.weight_decay, h.decoupled) + 3 * (radam_rho_t(h.beta2, double(h.step)) > 5.0);
  }
  static constexpr unsigned used(int) { return 0b1111u; }

  template <typename M>
  using Consts = RadamScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    const double t = double(h.step);
    const double w = 1.0 - h.beta1;
    const double rho_inf = 2.0 / (1.0 - h.beta2) - 1.0;
    const double rho_t = radam_rho_t(h.beta2, t);
    const double rect =
        rho_t > 5.0 ? sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) : 1.0;
    return {M(w), M(1.0 - w), M(h.beta2), M(1.0 - h.beta2), M(1.0 - pow(h.beta1, t)), M(h.lr), M(h.eps),
            M(sqrt(1.0 - pow(h.beta2, t))), M(rect), M(h.weight_decay), M(1.0 - h.lr * h.weight_decay),
            M(h.maximize ? -1.0 : 1.0), w < 0.5};
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void apply(const Consts<M>& s, M (&e)[kOperands]) {
    M& p = e[0];
    M& m = e[2];
    M& v = e[3];
    M g = e[1] * s.grad_sign;
    apply_weight_decay<V % 3>(g, p, s.weight_decay, s.decay_keep);
    m = lerp_(m, g, s.w, s.one_minus_w, s.small_w);
    v = v * s.beta2 + s.one_minus_beta2 * (g * g);
    const M corrected = m / s.bias_correction1;
    if constexpr (V >= 3) {
      const M adaptive = s.bias_correction2_sqrt / (sqrt_(v) + s.eps);
      p = p - corrected * s.lr * adaptive * s.rect;
    } else {
      p = p - corrected * s.lr;
    }
  }

  static HyperProblem range_more(const Hyper& h, double largest) {
    if (h.decoupled && !(h.lr * h.weight_decay <= largest)) {
      return {"lr * weight_decay", "must fit the arithmetic's type (the params are scaled by 1 - lr * weight_decay)",
              h.lr * h.weight_decay, true};
    }
    return {};
  }
};

}  // namespace fastopt
