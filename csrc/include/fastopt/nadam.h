// NAdam (Dozat 2016, "Incorporating Nesterov Momentum into Adam"), with torch's momentum decay
// schedule. torch.optim.NAdam's numbers (t the 1-based step):
//
//   g = maximize ? -grad : grad;  weight decay: L2 (g += wd * p) or decoupled (p *= 1 - lr * wd)
//   mu_t = b1 * (1 - 0.5 * 0.96^(t * momentum_decay));  mu_{t+1} likewise
//   mu_product = mu_1 * ... * mu_t     (torch keeps it as state; the caller passes it, or it is
//                                      computed here from t for fixed b1 and momentum_decay)
//   m = lerp(m, g, 1 - b1);   v = b2 * v + (1 - b2) * g * g
//   denom = sqrt(v / (1 - b2^t)) + eps
//   p = p - lr (1 - mu_t) / (1 - mu_product) * g / denom
//   p = p - lr mu_{t+1} / (1 - mu_product mu_{t+1}) * m / denom
//
// Operands {param, grad, exp_avg, exp_avg_sq}. The host computes the constants (kDeviceStep = false).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "fastopt/grad_scale.h"
#include "fastopt/rule.h"
#include "fastopt/scalar_math.h"
#include "fastopt/weight_decay.h"

namespace fastopt {

struct NadamHyper {
  double lr, beta1, beta2, eps, weight_decay, momentum_decay;
  bool decoupled, maximize;
  double mu_product;  // mu_1 * ... * mu_t, this step's mu included
  int64_t step;
  GradScaling scaling;
};

FASTOPT_HD double nadam_mu(double beta1, double momentum_decay, double t) {
  return beta1 * (1.0 - 0.5 * pow(0.96, t * momentum_decay));
}

template <typename M>
struct NadamScalars {
  M w, one_minus_w, beta2, one_minus_beta2, bias_correction2, eps, grad_coef, avg_coef;
  M weight_decay, decay_keep, grad_sign;
  bool small_w;
};

struct NadamRule : RuleDefaults {
  static constexpr const char* kName = "nadam";
  static constexpr const char* kSummary =
      "Fused NAdam step (torch.optim.NAdam semantics: Adam with Nesterov momentum and torch's momentum\n"
      "decay), in place. exp_avgs and exp_avg_sqs start at zero. mu_product: torch's state of that name\n"
      "after this step (mu_1 * ... * mu_step); None computes it from step, for beta1 and momentum_decay\n"
      "that never changed.";
  static constexpr int kOperands = 4;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {
      {"params", nullptr}, {"grads", nullptr}, {"exp_avgs", nullptr}, {"exp_avg_sqs", nullptr, true}};
  static constexpr int kHypers = 9;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"lr", HyperRule::NonNegative, 2e-3, "learning rate"},
      {"beta1", HyperRule::UnitInterval, 0.9, "decay of exp_avg"},
      {"beta2", HyperRule::UnitInterval, 0.999, "decay of exp_avg_sq"},
      {"eps", HyperRule::Positive, 1e-8, "added to the denominator"},
      {"weight_decay", HyperRule::NonNegative, 0.0, "L2, or decoupled with decoupled_weight_decay"},
      {"momentum_decay", HyperRule::NonNegative, 4e-3, "of the momentum schedule mu_t"},
      {"decoupled_weight_decay", HyperRule::Flag, 0.0, "p *= 1 - lr * weight_decay instead of L2"},
      {"maximize", HyperRule::Flag, 0.0, "ascend the gradient"},
      {"mu_product", HyperRule::OptionalUnit, 0.0, "torch's state after this step (None: from step)"},
  };
  static constexpr bool kUsesStep = true;
  static constexpr bool kDeviceStep = false;

  using Hyper = NadamHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    double mu_product = v[8];
    if (std::isnan(mu_product)) mu_product = product_of_mus(v[1], v[5], step);
    return {v[0], v[1], v[2], v[3], v[4], v[5], v[6] != 0.0, v[7] != 0.0, mu_product, step, scaling};
  }

  // mu_1 * ... * mu_step. A product of `step` factors, so each thread remembers its last one and goes
  // on from there when called with the same beta1 and momentum_decay and a later step (a training
  // loop's calls): O(1) per call instead of O(step).
  // The most factors one call multiplies (about 0.1 s); beyond, the caller must pass mu_product.
  static constexpr int64_t kMaxProductSteps = 10000000;

  static double product_of_mus(double beta1, double momentum_decay, int64_t step) {
    struct Last {
      double beta1 = -1.0, momentum_decay = -1.0, product = 1.0;
      int64_t step = 0;
    };
    static thread_local Last last;
    if (step < 1) return 1.0;  // (refused by the step check; the memory is left as it was)
    if (!(last.beta1 == beta1 && last.momentum_decay == momentum_decay && last.step <= step)) {
      last = Last{beta1, momentum_decay, 1.0, 0};
    }
    if (step - last.step > kMaxProductSteps && last.product != 0.0) {
      return std::numeric_limits<double>::quiet_NaN();  // (refused by check_more: too many factors to multiply)
    }
    for (int64_t i = last.step + 1; i <= step && last.product != 0.0; ++i) {  // (0 stays 0: done)
      last.product *= nadam_mu(beta1, momentum_decay, double(i));
    }
    last.step = step;
    return last.product;
  }

  static constexpr int kVariants = 3;  // weight decay mode (weight_decay.h)
  static int variant(const Hyper& h) { return weight_decay_mode(h.weight_decay, h.decoupled); }
  static constexpr unsigned used(int) { return 0b1111u; }

  template <typename M>
  using Consts = NadamScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    const double t = double(h.step);
    const double w = 1.0 - h.beta1;
    const double mu = nadam_mu(h.beta1, h.momentum_decay, t);
    const double mu_next = nadam_mu(h.beta1, h.momentum_decay, t + 1.0);
    return {M(w),
            M(1.0 - w),
            M(h.beta2),
            M(1.0 - h.beta2),
            M(1.0 - pow(h.beta2, t)),
            M(h.eps),
            M(-h.lr * (1.0 - mu) / (1.0 - h.mu_product)),
            M((-h.lr * mu_next) / (1.0 - h.mu_product * mu_next)),
            M(h.weight_decay),
            M(1.0 - h.lr * h.weight_decay),
            M(h.maximize ? -1.0 : 1.0),
            w < 0.5};
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void apply(const Consts<M>& s, M (&e)[kOperands]) {
    M& p = e[0];
    M& m = e[2];
    M& v = e[3];
    M g = e[1] * s.grad_sign;
    apply_weight_decay<V>(g, p, s.weight_decay, s.decay_keep);
    m = lerp_(m, g, s.w, s.one_minus_w, s.small_w);
    v = v * s.beta2 + s.one_minus_beta2 * (g * g);
    const M denom = sqrt_(v / s.bias_correction2) + s.eps;
    p = p + s.grad_coef * (g / denom);
    p = p + s.avg_coef * (m / denom);
  }

  static HyperProblem check_more(const Hyper& h) {
    if (std::isnan(h.mu_product)) {
      return {"step", "is more than 10,000,000 steps past the last one this thread computed mu_product for: pass "
              "mu_product (torch's state) with it", double(h.step), true};
    }
    if (h.mu_product >= 1.0 && h.beta1 > 0.0) {
      return {"mu_product", "must be < 1 (a product of momentum factors mu_t < 1)", h.mu_product, true};
    }
    return {};
  }
};

}  // namespace fastopt
