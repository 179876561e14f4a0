// Adam (L2 weight decay added to the gradient) and AdamW (decoupled decay), with AMSGrad:
// torch.optim.Adam / AdamW's numbers. t is the 1-based step of this update.
//
//   g    = maximize ? -grad : grad
//   Adam:  g = g + wd * p (wd != 0)             AdamW:  p = p * (1 - lr * wd)
//   m    = b1 * m + (1 - b1) * g
//   v    = b2 * v + (1 - b2) * g * g
//   amsgrad: vmax = max(vmax, v), and vmax stands for v below
//   denom = sqrt(v) / sqrt(1 - b2^t) + eps
//   p    = p - (lr / (1 - b1^t)) * m / denom
//
// The bias corrections are folded into two per-call constants (step_size, bias_correction2_sqrt),
// computed once on the host, or on the device when lr and step live there (capturable CUDA calls).
#pragma once

#include <cmath>
#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/weight_decay.h"
#include "fastopt/macros.h"
#include "fastopt/scalar_math.h"

namespace fastopt {

struct AdamHyper {
  double lr;
  double beta1;
  double beta2;
  double eps;
  double weight_decay;
  bool amsgrad;
  bool decoupled;  // true: AdamW
  bool maximize;
  int64_t step;
  GradScaling scaling;  // grad_scale and skip_nonfinite (grad_scale.h)
};

template <typename M>
struct AdamScalars {
  M beta1, one_minus_beta1, beta2, one_minus_beta2;
  M eps, neg_step_size, bias_correction2_sqrt;
  M l2_decay;        // Adam: wd, AdamW: 0
  M decoupled_keep;  // AdamW: 1 - lr * wd, Adam: 1
  M grad_sign;
};

template <typename M>
FASTOPT_HD AdamScalars<M> adam_scalars(const AdamHyper& h) {
  const double t = double(h.step);
  const double bias_correction1 = 1.0 - pow(h.beta1, t);
  const double bias_correction2 = 1.0 - pow(h.beta2, t);
  AdamScalars<M> s;
  s.beta1 = M(h.beta1);
  s.one_minus_beta1 = M(1.0 - h.beta1);
  s.beta2 = M(h.beta2);
  s.one_minus_beta2 = M(1.0 - h.beta2);
  s.eps = M(h.eps);
  s.neg_step_size = M(-(h.lr / bias_correction1));
  s.bias_correction2_sqrt = M(sqrt(bias_correction2));
  s.l2_decay = M(h.decoupled ? 0.0 : h.weight_decay);
  s.decoupled_keep = M(h.decoupled ? 1.0 - h.lr * h.weight_decay : 1.0);
  s.grad_sign = M(h.maximize ? -1.0 : 1.0);
  return s;
}

// The form a call runs: AdamW's (DECOUPLED) also for Adam without weight decay. The two are then the same
// update, but AdamW's p * 1 leaves g alone as torch.optim does, where Adam's g + 0 * p would turn an
// infinite p into NaN and a -0.0 gradient into +0.0. Every caller dispatches on this, not on h.decoupled.
FASTOPT_HD bool adam_decoupled_form(const AdamHyper& h) { return h.decoupled || h.weight_decay == 0.0; }

// One element. DECOUPLED selects AdamW; when AMSGRAD is false, vmax is not touched.
template <bool AMSGRAD, bool DECOUPLED, typename M>
FASTOPT_HD void adam_update(M& p, M grad, M& m, M& v, M& vmax, const AdamScalars<M>& s) {
  M g = grad * s.grad_sign;
  if constexpr (DECOUPLED) {
    p = p * s.decoupled_keep;
  } else {
    g = g + s.l2_decay * p;  // (reached with wd != 0 only: adam_decoupled_form)
  }
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * (g * g);
  M second = v;
  if constexpr (AMSGRAD) {
    vmax = maximum(vmax, v);
    second = vmax;
  }
  const M denom = sqrt_(second) / s.bias_correction2_sqrt + s.eps;
  p = p + s.neg_step_size * (m / denom);
}

}  // namespace fastopt
