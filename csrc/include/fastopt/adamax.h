// Adamax (Kingma & Ba 2015, section 7.1): Adam with the infinity norm. torch.optim.Adamax's numbers:
//
//   g = maximize ? -grad : grad;   g = g + wd * p   (L2, when wd != 0)
//   m = lerp(m, g, 1 - b1)                              (torch's lerp_, scalar_math.h)
//   u = max(b2 * u, |g| + eps)                          (NaN propagates, as torch.maximum)
//   p = p - (lr / (1 - b1^t)) * (m / u)
//
// Operands {param, grad, exp_avg, exp_inf}; t is the 1-based step.
#pragma once

#include <cmath>
#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/rule.h"
#include "fastopt/scalar_math.h"
#include "fastopt/weight_decay.h"

namespace fastopt {

struct AdamaxHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool maximize;
  int64_t step;
  GradScaling scaling;
};

template <typename M>
struct AdamaxScalars {
  M w, one_minus_w, beta2, eps, neg_step_size, weight_decay, grad_sign;
  bool small_w;
};

struct AdamaxRule : RuleDefaults {
  static constexpr const char* kName = "adamax";
  static constexpr const char* kSummary =
      "Fused Adamax step (torch.optim.Adamax semantics: Adam with the infinity norm), in place.\n"
      "exp_avgs and exp_infs start at zero.";
  static constexpr int kOperands = 4;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {
      {"params", nullptr}, {"grads", nullptr}, {"exp_avgs", nullptr}, {"exp_infs", nullptr, true}};
  static constexpr int kHypers = 6;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"lr", HyperRule::NonNegative, 2e-3, "learning rate"},
      {"beta1", HyperRule::UnitInterval, 0.9, "decay of exp_avg"},
      {"beta2", HyperRule::UnitInterval, 0.999, "decay of exp_inf"},
      {"eps", HyperRule::Positive, 1e-8, "added to |g| before the max"},
      {"weight_decay", HyperRule::NonNegative, 0.0, "L2: g += weight_decay * p"},
      {"maximize", HyperRule::Flag, 0.0, "ascend the gradient"},
  };
  static constexpr bool kUsesStep = true;

  using Hyper = AdamaxHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    return {v[0], v[1], v[2], v[3], v[4], v[5] != 0.0, step, scaling};
  }

  static constexpr int kVariants = 2;  // weight decay off / L2
  static int variant(const Hyper& h) { return h.weight_decay != 0.0 ? 1 : 0; }
  static constexpr unsigned used(int) { return 0b1111u; }

  template <typename M>
  using Consts = AdamaxScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    const double w = 1.0 - h.beta1;
    return {M(w), M(1.0 - w), M(h.beta2), M(h.eps), M(-(h.lr / (1.0 - pow(h.beta1, double(h.step))))),
            M(h.weight_decay), M(h.maximize ? -1.0 : 1.0), w < 0.5};
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void apply(const Consts<M>& s, M (&e)[kOperands]) {
    M& p = e[0];
    M& m = e[2];
    M& u = e[3];
    M g = e[1] * s.grad_sign;
    if constexpr (V == 1) g = g + s.weight_decay * p;
    m = lerp_(m, g, s.w, s.one_minus_w, s.small_w);
    const M a = g < M(0) ? -g : g;
    u = maximum(u * s.beta2, a + s.eps);
    p = p + s.neg_step_size * (m / u);
  }
};

}  // namespace fastopt
