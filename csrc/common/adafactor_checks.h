// The rules of Adafactor's hyperparameters (fastopt/adafactor.h), written once for the Python binding
// (csrc/python/adafactor_bindings.cpp) and the XLA FFI handler (csrc/jax/adafactor_handlers.cpp): the
// first one broken, in argument order, or nothing.
#pragma once

#include <cmath>

#include "common/hyper_rules.h"
#include "fastopt/adafactor.h"

namespace fastopt::rules {

inline Check check(const AdafactorHyper& h) {
  if (!std::isnan(h.eps1)) {  // (NaN: None, the dtype's machine epsilon)
    if (auto bad = nonnegative("eps1", h.eps1)) return bad;
  }
  if (auto bad = first({step(h.step), nonnegative("lr", h.lr), finite("beta2_decay", h.beta2_decay)})) return bad;
  if (h.beta2_decay > 0.0) return Violation{"beta2_decay", "must be <= 0", h.beta2_decay, false, true};
  if (auto bad = first({nonnegative("eps2", h.eps2), finite("d", h.d)})) return bad;
  if (!(h.d >= 1.0)) return Violation{"d", "must be >= 1 (the clipping threshold)", h.d, false, true};
  return nonnegative("weight_decay", h.weight_decay);
}

}  // namespace fastopt::rules
