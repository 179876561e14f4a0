// ASGD, averaged SGD (Polyak & Juditsky 1992), with torch's eta and mu schedules.
// torch.optim.ASGD's numbers (t the 1-based step):
//
//   g = maximize ? -grad : grad;   g = g + wd * p   (L2, when wd != 0)
//   p = p * (1 - lambd * eta);   p = p - eta * g
//   ax = p if mu == 1, else ax + (p - ax) * mu
//
// eta and mu are torch's per-parameter state from the previous step: eta_t = lr / (1 + lambd lr
// (t - 1))^alpha and mu_t = 1 / max(1, t - 1 - t0) (eta_1 = lr, mu_1 = 1). The caller passes them (as
// the classes do, from their state), or they are computed from step for an lr that never changed.
// Operands {param, grad, ax}.
#pragma once

#include <cmath>
#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/rule.h"
#include "fastopt/scalar_math.h"

namespace fastopt {

struct AsgdHyper {
  double lr, lambd, alpha, t0, weight_decay;
  bool maximize;
  double eta, mu;
  int64_t step;
  GradScaling scaling;
};

template <typename M>
struct AsgdScalars {
  M decay_keep, neg_eta, mu, weight_decay, grad_sign;
};

struct AsgdRule : RuleDefaults {
  static constexpr const char* kName = "asgd";
  static constexpr const char* kSummary =
      "Fused ASGD step (torch.optim.ASGD semantics: averaged SGD), in place. axs start at zero.\n"
      "eta and mu: torch's state of those names before this step; None computes them from step (for an\n"
      "lr, lambd, alpha and t0 that never changed).";
  static constexpr int kOperands = 3;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {{"params", nullptr}, {"grads", nullptr}, {"axs", nullptr}};
  static constexpr int kHypers = 8;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"lr", HyperRule::NonNegative, 1e-2, "learning rate (eta's schedule starts from it)"},
      {"lambd", HyperRule::NonNegative, 1e-4, "decay term"},
      {"alpha", HyperRule::NonNegative, 0.75, "power of eta's schedule"},
      {"t0", HyperRule::Finite, 1e6, "the step averaging starts at"},
      {"weight_decay", HyperRule::NonNegative, 0.0, "L2: g += weight_decay * p"},
      {"maximize", HyperRule::Flag, 0.0, "ascend the gradient"},
      {"eta", HyperRule::OptionalNonNegative, 0.0, "this step's eta (None: from step)"},
      {"mu", HyperRule::OptionalNonNegative, 0.0, "this step's mu (None: from step)"},
  };
  static constexpr bool kUsesStep = true;
  static constexpr bool kDeviceStep = false;
  static constexpr bool kDeviceLr = false;  // (eta = None is computed from the host's lr)

  using Hyper = AsgdHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    const double t = double(step);
    const double eta = std::isnan(v[6]) ? v[0] / pow(1.0 + v[1] * v[0] * (t - 1.0), v[2]) : v[6];
    const double mu = std::isnan(v[7]) ? (step == 1 ? 1.0 : 1.0 / std::fmax(1.0, t - 1.0 - v[3])) : v[7];
    return {v[0], v[1], v[2], v[3], v[4], v[5] != 0.0, eta, mu, step, scaling};
  }

  // variant = (weight decay on) + 2 * (mu == 1: ax is a copy of p)
  static constexpr int kVariants = 4;
  static int variant(const Hyper& h) { return (h.weight_decay != 0.0 ? 1 : 0) + (h.mu == 1.0 ? 2 : 0); }
  static constexpr unsigned used(int) { return 0b111u; }

  template <typename M>
  using Consts = AsgdScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    return {M(1.0 - h.lambd * h.eta), M(-h.eta), M(h.mu), M(h.weight_decay), M(h.maximize ? -1.0 : 1.0)};
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void apply(const Consts<M>& s, M (&e)[kOperands]) {
    M& p = e[0];
    M& ax = e[2];
    M g = e[1] * s.grad_sign;
    if constexpr (V & 1) g = g + s.weight_decay * p;
    p = p * s.decay_keep;
    p = p + s.neg_eta * g;
    if constexpr ((V & 2) != 0) {
      ax = p;
    } else {
      ax = ax + (p - ax) * s.mu;
    }
  }
};

}  // namespace fastopt
