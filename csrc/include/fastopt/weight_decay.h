// The three ways torch's optimizers apply weight decay, as a rule variant (rule.h): none, L2 (added
// to the gradient: g = g + wd * p) and decoupled (p = p * (1 - lr * wd), AdamW's). A variant rather
// than a multiply by 0 or 1, so that wd = 0 costs nothing and an infinite p cannot turn g into NaN.
// A fourth mode, L2 when wd != 0 (selected per element), is for callers that do not dispatch on wd.
#pragma once

#include "fastopt/macros.h"

namespace fastopt {

enum WeightDecayMode : int { kNoDecay = 0, kL2Decay = 1, kDecoupledDecay = 2, kL2WhenNonzero = 3 };

constexpr int weight_decay_mode(double weight_decay, bool decoupled) {
  return weight_decay == 0.0 ? kNoDecay : (decoupled ? kDecoupledDecay : kL2Decay);
}

// g and p after the decay of mode MODE: wd is the weight decay, keep = 1 - lr * wd.
template <int MODE, typename M>
FASTOPT_HD void apply_weight_decay(M& g, M& p, M wd, M keep) {
  if constexpr (MODE == kL2Decay) g = g + wd * p;
  if constexpr (MODE == kDecoupledDecay) p = p * keep;
}

// g after the L2 decay of mode MODE (kNoDecay, kL2Decay or kL2WhenNonzero), in sgd.h, adagrad.h and
// rmsprop.h: wd = 0 leaves g exactly as torch.optim does, which skips the term (an infinite p stays
// infinite, where 0 * inf would make g NaN, and a -0.0 gradient keeps its sign). The CPU loops dispatch
// on wd != 0 (kNoDecay / kL2Decay: a per-element select kept some of them from vectorising); the CUDA
// kernels select per element (kL2WhenNonzero), which costs nothing there.
template <int MODE, typename M>
FASTOPT_HD M l2_decayed(M g, M p, M wd) {
  if constexpr (MODE == kL2Decay) {
    return g + wd * p;
  } else if constexpr (MODE == kL2WhenNonzero) {
    return wd != M(0) ? g + wd * p : g;
  } else {
    return g;
  }
}

}  // namespace fastopt
