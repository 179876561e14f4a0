// Loss scaling and non-finite gradients, shared by every optimizer update.
//
// With loss scaling the caller multiplied the loss by S (to keep small float16/float32 gradients
// away from zero), so every gradient arrives S times too large. The update unscales it on the fly:
//
//   g = grad / S                         (a true division, as torch's fused Adam's grad_scale does,
//                                         so the result is exactly NumPy's grad / S)
//
// and uses g wherever the rule says grad. With skip_nonfinite, a call first reads every unscaled
// gradient g and, if any is NaN or +-Inf (found_inf, as torch's GradScaler names it), writes
// nothing at all. The check looks at the unscaled value, the one the update would use: it is what
// GradScaler checks too, and it also catches a finite grad that overflows when divided by S < 1.
#pragma once

#include "fastopt/macros.h"

namespace fastopt {

// Per-call options of every update (part of each *Hyper struct; defaults: no scaling, no check).
struct GradScaling {
  double grad_scale = 1.0;      // S, finite and > 0; 1 means "not scaled" (no division at all)
  bool skip_nonfinite = false;  // pre-pass: skip the whole call when any g is NaN or Inf
};

// The gradient the update uses. SCALED is false when S == 1, so an unscaled call divides nothing.
template <bool SCALED, typename M>
FASTOPT_HD M unscale_grad(M grad, M grad_scale) {
  if constexpr (SCALED) {
    return grad / grad_scale;
  } else {
    return grad;
  }
}

// True for finite x. x - x is exactly 0 for every finite x and NaN for NaN and +-Inf; written as
// arithmetic rather than std::isfinite so that the pre-pass loop vectorises on every instruction
// set (and nothing here depends on -ffinite-math assumptions: the kernels never use -ffast-math).
template <typename M>
FASTOPT_HD bool is_finite_(M x) {
  return (x - x) == M(0);
}

}  // namespace fastopt
