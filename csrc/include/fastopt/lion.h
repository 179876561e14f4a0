// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2), with
// decoupled weight decay. Not in torch.optim; the numbers follow the paper:
//
//   g = maximize ? -grad : grad
//   c = b1 * m + (1 - b1) * g           (the update direction interpolates the momentum and g)
//   p = p * (1 - lr * wd)
//   p = p - lr * sign(c)                (sign(0) = 0; a NaN stays NaN)
//   m = b2 * m + (1 - b2) * g
//
// Defaults lr=1e-4, betas=(0.9, 0.99), weight_decay=0 (the paper suggests an lr 3-10x smaller than
// AdamW's and a weight decay 3-10x larger). Operands {param, grad, exp_avg}.
#pragma once

#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/macros.h"
#include "fastopt/rule.h"
#include "fastopt/scalar_math.h"

namespace fastopt {

struct LionHyper {
  double lr;
  double beta1;
  double beta2;
  double weight_decay;
  bool maximize;
  int64_t step;  // unused (Lion has no bias correction); kept for the shared interface
  GradScaling scaling;
};

template <typename M>
struct LionScalars {
  M beta1, one_minus_beta1, beta2, one_minus_beta2, decay_keep, neg_lr, grad_sign;
};

struct LionRule : RuleDefaults {
  static constexpr const char* kName = "lion";
  static constexpr const char* kSummary =
      "Fused Lion step (Chen et al. 2023, \"Symbolic Discovery of Optimization Algorithms\"), in place:\n"
      "p = p * (1 - lr * weight_decay) - lr * sign(beta1 * m + (1 - beta1) * g);\n"
      "m = beta2 * m + (1 - beta2) * g. exp_avgs start at zero.";
  static constexpr int kOperands = 3;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {{"params", nullptr}, {"grads", nullptr},
                                                           {"exp_avgs", nullptr}};
  static constexpr int kHypers = 5;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"lr", HyperRule::NonNegative, 1e-4, "learning rate"},
      {"beta1", HyperRule::UnitInterval, 0.9, "interpolation of the update direction"},
      {"beta2", HyperRule::UnitInterval, 0.99, "decay of the momentum exp_avg"},
      {"weight_decay", HyperRule::NonNegative, 0.0, "decoupled: p *= 1 - lr * weight_decay"},
      {"maximize", HyperRule::Flag, 0.0, "ascend the gradient"},
  };
  static constexpr bool kUsesStep = false;

  using Hyper = LionHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    return {v[0], v[1], v[2], v[3], v[4] != 0.0, step, scaling};
  }

  static constexpr unsigned used(int /*variant*/) { return 0b111u; }
  static int variant(const Hyper&) { return 0; }

  template <typename M>
  using Consts = LionScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    return {M(h.beta1),           M(1.0 - h.beta1), M(h.beta2), M(1.0 - h.beta2),
            M(1.0 - h.lr * h.weight_decay), M(-h.lr), M(h.maximize ? -1.0 : 1.0)};
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void apply(const Consts<M>& s, M (&e)[kOperands]) {
    M& p = e[0];
    M& m = e[2];
    const M g = e[1] * s.grad_sign;
    const M c = s.beta1 * m + s.one_minus_beta1 * g;
    p = p * s.decay_keep;
    p = p + s.neg_lr * signum(c);
    m = s.beta2 * m + s.one_minus_beta2 * g;
  }

  static HyperProblem range_more(const Hyper& h, double largest) {
    if (!(h.lr * h.weight_decay <= largest)) {
      return {"lr * weight_decay", "must fit the arithmetic's type: Lion scales the params by 1 - lr * weight_decay",
              h.lr * h.weight_decay, true};
    }
    return {};
  }
};

}  // namespace fastopt
