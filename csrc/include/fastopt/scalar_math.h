// Small scalar helpers used by the update rules, identical on host and device.
#pragma once

#include <cmath>

#include "fastopt/macros.h"

namespace fastopt {

FASTOPT_HD float sqrt_(float x) { return sqrtf(x); }
FASTOPT_HD double sqrt_(double x) { return sqrt(x); }

// max(a, b) that propagates NaN from either side, like torch.maximum (std::max would not).
template <typename M>
FASTOPT_HD M maximum(M a, M b) {
  return (a > b || a != a) ? a : b;
}

// -1, 0 or +1, and NaN for NaN, like torch.sign (hinge.h's sign_ maps NaN to 0). Written as compares
// and a select, so that the loops vectorise.
template <typename M>
FASTOPT_HD M signum(M x) {
  const M s = M(x > M(0)) - M(x < M(0));
  return x != x ? x : s;
}

// torch.lerp's formula, a + w * (b - a) for w < 0.5 and b - (b - a) * (1 - w) otherwise (exact at both
// ends): torch's optimizers move their averages with lerp_, and matching its rounding keeps float32 close.
template <typename M>
FASTOPT_HD M lerp_(M a, M b, M w, M one_minus_w, bool small_w) {
  return small_w ? a + w * (b - a) : b - (b - a) * one_minus_w;
}

// x limited to [lo, hi], NaN staying NaN (torch.clamp).
template <typename M>
FASTOPT_HD M clamp_(M x, M lo, M hi) {
  const M above = x < lo ? lo : x;  // (two plain selects: nested ones keep GCC from vectorising)
  return above > hi ? hi : above;
}

}  // namespace fastopt
