// The three ways torch's optimizers apply weight decay, as a rule variant (rule.h): none, L2 (added
// to the gradient: g = g + wd * p) and decoupled (p = p * (1 - lr * wd), AdamW's). A variant rather
// than a multiply by 0 or 1, so that wd = 0 costs nothing and an infinite p cannot turn g into NaN.
#pragma once

#include "fastopt/macros.h"

namespace fastopt {

enum WeightDecayMode : int { kNoDecay = 0, kL2Decay = 1, kDecoupledDecay = 2 };

constexpr int weight_decay_mode(double weight_decay, bool decoupled) {
  return weight_decay == 0.0 ? kNoDecay : (decoupled ? kDecoupledDecay : kL2Decay);
}

// g and p after the decay of mode MODE: wd is the weight decay, keep = 1 - lr * wd.
template <int MODE, typename M>
FASTOPT_HD void apply_weight_decay(M& g, M& p, M wd, M keep) {
  if constexpr (MODE == kL2Decay) g = g + wd * p;
  if constexpr (MODE == kDecoupledDecay) p = p * keep;
}

}  // namespace fastopt
