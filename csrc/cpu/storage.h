// Storage types of the element loops (optim_loops.h). A loop reads each operand from its storage type,
// widens it to the arithmetic type T, applies the rule in T, and narrows what it writes back:
//   T itself (float32 or float64): widen and narrow do nothing, the plain loops;
//   Bf16 / F16: bfloat16 / float16 bits (fastopt/bf16.h, fastopt/fp16.h), widened exactly to float32
//     and written back rounded to nearest even: half-precision parameters and gradients on the CPU,
//     whose optimizer state is float32 (the CUDA path's rule, and the twins').
// Bf16 and F16 are distinct types around the same 16 bits, so a loop's storage is part of its type.
#pragma once

#include <cstdint>
#include <type_traits>

#include "fastopt/bf16.h"
#include "fastopt/fp16.h"
#include "fastopt/macros.h"

namespace fastopt::cpu {

struct Bf16 {
  uint16_t bits;
};

struct F16 {
  uint16_t bits;
};

static_assert(sizeof(Bf16) == 2 && sizeof(F16) == 2, "half storage must be its 16 bits");

template <typename T>
FASTOPT_HALF_CONVERSION T widen(T x) {
  return x;
}
FASTOPT_HALF_CONVERSION float widen(Bf16 x) { return bf16_to_float(x.bits); }
FASTOPT_HALF_CONVERSION float widen(F16 x) { return f16_to_float(x.bits); }

// x (of the arithmetic type T) in storage S. (FASTOPT_HALF_CONVERSION: always inlined, fp16.h says why.)
template <typename S, typename T>
FASTOPT_HALF_CONVERSION S narrow(T x) {
  if constexpr (std::is_same_v<S, Bf16>) {
    return Bf16{float_to_bf16(x)};
  } else if constexpr (std::is_same_v<S, F16>) {
    return F16{float_to_f16(x)};
  } else {
    return x;
  }
}

}  // namespace fastopt::cpu
