// Arguments of the CPU loss loops. The binding has checked every array and every label before a
// loop runs; the loops still never index with a label out of range (another thread may change one).
#pragma once

#include <cstdint>

#include "common/reduction.h"

namespace fastopt::cpu {

using fastopt::Reduction;

template <typename T, typename L>
struct CrossEntropyArgs {
  const T* logits;     // (n, c)
  const L* labels;     // (n,), each in [0, c) or == ignore_index
  const T* weight;     // (c,) or nullptr
  T* dlogits;          // (n, c); may be logits itself
  T* row_losses;       // (n,) for Reduction::None, else nullptr
  int64_t n, c;
  int64_t ignore_index;
  double label_smoothing, z_loss;
  Reduction reduction;
};

template <typename T, typename L>
struct HingeArgs {
  const T* scores;  // (n, c)
  const L* labels;  // (n,), each in [0, c)
  T* dscores;       // (n, c); may be scores itself
  T* row_losses;    // (n,) for Reduction::None, else nullptr
  int64_t n, c;
  double margin;
  Reduction reduction;
};

}  // namespace fastopt::cpu
