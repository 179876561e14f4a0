// Rprop (Riedmiller & Braun 1993): a step size per element, grown while the gradient keeps its sign
// and shrunk when it flips. torch.optim.Rprop's numbers:
//
//   g = maximize ? -grad : grad
//   f = etaplus if g * prev > 0,  etaminus if < 0,  1 if == 0
//   step_size = clamp(step_size * f, step_size_min, step_size_max)
//   g = 0 where f == etaminus (the step after a sign flip does not move)
//   p = p - sign(g) * step_size;   prev = g
//
// Operands {param, grad, prev, step_size}: prev starts at zero, step_size at the lr (torch's only
// use of it). No lr and no step here.
#pragma once

#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/rule.h"
#include "fastopt/scalar_math.h"

namespace fastopt {

struct RpropHyper {
  double etaminus, etaplus, step_size_min, step_size_max;
  bool maximize;
  double lr;  // unused (the shared interface's field: Rprop's lr only starts step_size)
  int64_t step;
  GradScaling scaling;
};

template <typename M>
struct RpropScalars {
  M etaminus, etaplus, step_size_min, step_size_max, grad_sign;
};

struct RpropRule : RuleDefaults {
  static constexpr const char* kName = "rprop";
  static constexpr const char* kSummary =
      "Fused Rprop step (torch.optim.Rprop semantics), in place. prevs start at zero, step_sizes at\n"
      "torch's lr (0.01 by default).";
  static constexpr int kOperands = 4;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {
      {"params", nullptr}, {"grads", nullptr}, {"prevs", nullptr}, {"step_sizes", nullptr, true}};
  static constexpr int kHypers = 5;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"etaminus", HyperRule::Positive, 0.5, "shrinks step_size after a sign flip (0 < etaminus < 1)"},
      {"etaplus", HyperRule::AtLeastOne, 1.2, "grows step_size while the sign holds (> 1)"},
      {"step_size_min", HyperRule::NonNegative, 1e-6, "lower bound of step_size"},
      {"step_size_max", HyperRule::NonNegative, 50.0, "upper bound of step_size"},
      {"maximize", HyperRule::Flag, 0.0, "ascend the gradient"},
  };
  static constexpr bool kUsesStep = false;

  using Hyper = RpropHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    return {v[0], v[1], v[2], v[3], v[4] != 0.0, 0.0, step, scaling};
  }

  static constexpr unsigned used(int) { return 0b1111u; }
  static int variant(const Hyper&) { return 0; }

  template <typename M>
  using Consts = RpropScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    return {M(h.etaminus), M(h.etaplus), M(h.step_size_min), M(h.step_size_max), M(h.maximize ? -1.0 : 1.0)};
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void apply(const Consts<M>& s, M (&e)[kOperands]) {
    M& p = e[0];
    M& prev = e[2];
    M& size = e[3];
    M g = e[1] * s.grad_sign;
    const M product = g * prev;
    // etaplus, etaminus or 1 as a chain of plain selects (nested ones, or arithmetic on the compare
    // results, keep GCC from vectorising); a NaN product stays NaN, as torch's masked assignments
    // leave its sign
    M factor = product > M(0) ? s.etaplus : M(1);
    factor = product < M(0) ? s.etaminus : factor;
    factor = product != product ? product : factor;
    size = clamp_(size * factor, s.step_size_min, s.step_size_max);
    g = product < M(0) ? M(0) : g;  // no move after a sign flip (torch: where the factor is etaminus)
    p = p - signum(g) * size;
    prev = g;
  }

  static HyperProblem check_more(const Hyper& h) {
    if (!(h.etaminus < 1.0)) return {"etaminus", "must be < 1 (0 < etaminus < 1 < etaplus)", h.etaminus, true};
    if (!(h.etaplus > 1.0)) return {"etaplus", "must be > 1 (0 < etaminus < 1 < etaplus)", h.etaplus, true};
    return {};
  }
};

}  // namespace fastopt
