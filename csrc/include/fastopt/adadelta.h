// Adadelta (Zeiler 2012): torch.optim.Adadelta's numbers.
//
//   g = maximize ? -grad : grad;   g = g + wd * p   (L2, when wd != 0)
//   s     = rho * s + (1 - rho) * g * g
//   delta = sqrt(acc + eps) / sqrt(s + eps) * g
//   acc   = rho * acc + (1 - rho) * delta * delta
//   p     = p - lr * delta
//
// Operands {param, grad, square_avg, acc_delta}. No step: the rule does not depend on it.
#pragma once

#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/rule.h"
#include "fastopt/scalar_math.h"

namespace fastopt {

struct AdadeltaHyper {
  double lr, rho, eps, weight_decay;
  bool maximize;
  int64_t step;
  GradScaling scaling;
};

template <typename M>
struct AdadeltaScalars {
  M rho, one_minus_rho, eps, neg_lr, weight_decay, grad_sign;
};

struct AdadeltaRule : RuleDefaults {
  static constexpr const char* kName = "adadelta";
  static constexpr const char* kSummary =
      "Fused Adadelta step (torch.optim.Adadelta semantics), in place.\n"
      "square_avgs and acc_deltas start at zero.";
  static constexpr int kOperands = 4;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {
      {"params", nullptr}, {"grads", nullptr}, {"square_avgs", nullptr, true}, {"acc_deltas", nullptr, true}};
  static constexpr int kHypers = 5;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"lr", HyperRule::NonNegative, 1.0, "scales the update delta"},
      {"rho", HyperRule::ClosedUnit, 0.9, "decay of square_avg and acc_delta"},
      {"eps", HyperRule::Positive, 1e-6, "added inside both square roots"},
      {"weight_decay", HyperRule::NonNegative, 0.0, "L2: g += weight_decay * p"},
      {"maximize", HyperRule::Flag, 0.0, "ascend the gradient"},
  };
  static constexpr bool kUsesStep = false;

  using Hyper = AdadeltaHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    return {v[0], v[1], v[2], v[3], v[4] != 0.0, step, scaling};
  }

  static constexpr int kVariants = 2;  // weight decay off / L2
  static int variant(const Hyper& h) { return h.weight_decay != 0.0 ? 1 : 0; }
  static constexpr unsigned used(int) { return 0b1111u; }

  template <typename M>
  using Consts = AdadeltaScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    return {M(h.rho), M(1.0 - h.rho), M(h.eps), M(-h.lr), M(h.weight_decay), M(h.maximize ? -1.0 : 1.0)};
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void apply(const Consts<M>& s, M (&e)[kOperands]) {
    M& p = e[0];
    M& sq = e[2];
    M& acc = e[3];
    M g = e[1] * s.grad_sign;
    if constexpr (V == 1) g = g + s.weight_decay * p;
    sq = sq * s.rho + s.one_minus_rho * (g * g);
    const M std_ = sqrt_(sq + s.eps);
    const M delta = sqrt_(acc + s.eps) / std_ * g;
    acc = acc * s.rho + s.one_minus_rho * (delta * delta);
    p = p + s.neg_lr * delta;
  }
};

}  // namespace fastopt
