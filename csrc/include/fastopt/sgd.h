// SGD with momentum, dampening, Nesterov and L2 weight decay: torch.optim.SGD's numbers.
//
//   g  = maximize ? -grad : grad
//   g  = g + wd * p                                (when wd != 0, as torch)
//   momentum != 0:  b = g                          on the first step (a copy)
//                   b = mu * b + (1 - dampening) * g   afterwards
//                   g = g + mu * b  (nesterov)   or   g = b
//   p  = p - lr * g
#pragma once

#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/macros.h"
#include "fastopt/weight_decay.h"

namespace fastopt {

struct SgdHyper {
  double lr;
  double momentum;
  double dampening;
  double weight_decay;
  bool nesterov;
  bool maximize;
  int64_t step;  // 1-based number of this update; step 1 initialises the momentum buffer
  GradScaling scaling;  // grad_scale and skip_nonfinite (grad_scale.h)
};

// Per-call constants, computed once per call in double (on the host, or on the device for a
// capturable CUDA call) and rounded to the math type M.
template <typename M>
struct SgdScalars {
  M neg_lr, momentum, one_minus_dampening, weight_decay, grad_sign;
};

template <typename M>
FASTOPT_HD SgdScalars<M> sgd_scalars(const SgdHyper& h) {
  return {M(-h.lr), M(h.momentum), M(1.0 - h.dampening), M(h.weight_decay),
          M(h.maximize ? -1.0 : 1.0)};
}

// One element. MOMENTUM: keep a buffer; FIRST: this is the buffer's first step; DECAY: the L2 decay's
// mode (weight_decay.h).
template <bool MOMENTUM, bool NESTEROV, bool FIRST, int DECAY = kL2WhenNonzero, typename M>
FASTOPT_HD void sgd_update(M& p, M grad, M& buf, const SgdScalars<M>& s) {
  M g = l2_decayed<DECAY>(grad * s.grad_sign, p, s.weight_decay);
  if constexpr (MOMENTUM) {
    if constexpr (FIRST) {
      buf = g;
    } else {
      buf = buf * s.momentum + s.one_minus_dampening * g;
    }
    if constexpr (NESTEROV) {
      g = g + s.momentum * buf;
    } else {
      g = buf;
    }
  }
  p = p + s.neg_lr * g;
}

}  // namespace fastopt
