// RMSprop, plain or centered, with optional momentum and L2 weight decay: torch.optim.RMSprop's numbers.
//
//   g   = maximize ? -grad : grad
//   g   = g + wd * p                             (when wd != 0, as torch)
//   sq  = alpha * sq + (1 - alpha) * g * g
//   centered:  ga = alpha * ga + (1 - alpha) * g;   avg = sqrt(sq - ga * ga)
//   otherwise: avg = sqrt(sq)
//   avg = avg + eps
//   momentum > 0:  b = mu * b + g / avg;  p = p - lr * b
//   otherwise:     p = p - lr * g / avg
#pragma once

#include "fastopt/grad_scale.h"
#include "fastopt/weight_decay.h"
#include "fastopt/macros.h"
#include "fastopt/scalar_math.h"

namespace fastopt {

struct RmspropHyper {
  double lr;
  double alpha;
  double eps;
  double weight_decay;
  double momentum;
  bool centered;
  bool maximize;
  GradScaling scaling;  // grad_scale and skip_nonfinite (grad_scale.h)
};

template <typename M>
struct RmspropScalars {
  M neg_lr, alpha, one_minus_alpha, eps, weight_decay, momentum, grad_sign;
};

template <typename M>
FASTOPT_HD RmspropScalars<M> rmsprop_scalars(const RmspropHyper& h) {
  return {M(-h.lr),  M(h.alpha),        M(1.0 - h.alpha),
          M(h.eps),  M(h.weight_decay), M(h.momentum),
          M(h.maximize ? -1.0 : 1.0)};
}

// One element; DECAY: the L2 decay's mode (weight_decay.h).
template <bool CENTERED, bool MOMENTUM, int DECAY = kL2WhenNonzero, typename M>
FASTOPT_HD void rmsprop_update(M& p, M grad, M& square_avg, M& buf, M& grad_avg,
                               const RmspropScalars<M>& s) {
  const M g = l2_decayed<DECAY>(grad * s.grad_sign, p, s.weight_decay);
  square_avg = s.alpha * square_avg + s.one_minus_alpha * (g * g);
  M avg;
  if constexpr (CENTERED) {
    grad_avg = s.alpha * grad_avg + s.one_minus_alpha * g;
    avg = sqrt_(square_avg - grad_avg * grad_avg);
  } else {
    avg = sqrt_(square_avg);
  }
  avg = avg + s.eps;
  if constexpr (MOMENTUM) {
    buf = s.momentum * buf + g / avg;
    p = p + s.neg_lr * buf;
  } else {
    p = p + s.neg_lr * (g / avg);
  }
}

}  // namespace fastopt
