// Adagrad with learning-rate decay and L2 weight decay: torch.optim.Adagrad's numbers.
//
//   clr = lr / (1 + (t - 1) * lr_decay)         (t: 1-based step, host constant)
//   g   = maximize ? -grad : grad
//   g   = g + wd * p                             (when wd != 0, as torch)
//   sum = sum + g * g
//   p   = p - clr * g / (sqrt(sum) + eps)
#pragma once

#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/weight_decay.h"
#include "fastopt/macros.h"
#include "fastopt/scalar_math.h"

namespace fastopt {

struct AdagradHyper {
  double lr;
  double lr_decay;
  double weight_decay;
  double eps;
  bool maximize;
  int64_t step;
  GradScaling scaling;  // grad_scale and skip_nonfinite (grad_scale.h)
};

template <typename M>
struct AdagradScalars {
  M neg_clr, weight_decay, eps, grad_sign;
};

template <typename M>
FASTOPT_HD AdagradScalars<M> adagrad_scalars(const AdagradHyper& h) {
  const double clr = h.lr / (1.0 + double(h.step - 1) * h.lr_decay);
  return {M(-clr), M(h.weight_decay), M(h.eps), M(h.maximize ? -1.0 : 1.0)};
}

// One element; DECAY: the L2 decay's mode (weight_decay.h).
template <int DECAY = kL2WhenNonzero, typename M>
FASTOPT_HD void adagrad_update(M& p, M grad, M& sum, const AdagradScalars<M>& s) {
  const M g = l2_decayed<DECAY>(grad * s.grad_sign, p, s.weight_decay);
  sum = sum + g * g;
  const M std_dev = sqrt_(sum) + s.eps;
  p = p + s.neg_clr * (g / std_dev);
}

}  // namespace fastopt
