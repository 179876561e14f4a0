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

#if defined(__F16C__)
#include <immintrin.h>
#endif

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

// float16 blocks converted by the CPU's own F16C instructions, 8 lanes at a time, where the instruction
// set has them (avx2 and avx512 require F16C: dispatch.cpp; AVX-512's 16-lane forms measured slower on
// Zen 4: 16M float16 SGD, one thread, 6.8 ms against 5.7-6.0). They round to nearest even as
// fp16.h does and write NaNs as it does, so the bits are those of the baseline's integer conversions
// (tests/kernels/test_half_params_cpu.py compares the sets); they cost a fraction of them, which made the float16
// loops compute-bound at about 2.5x torch's fused step.
#if defined(__F16C__)
constexpr bool kHardwareF16 = true;
#else
constexpr bool kHardwareF16 = false;
#endif

FASTOPT_HOST void widen_block(const F16* __restrict in, float* __restrict out, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i))));
  }
#endif
  for (; i < n; ++i) out[i] = widen(in[i]);
}

FASTOPT_HOST void narrow_block(const float* __restrict in, F16* __restrict out, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#endif
  for (; i < n; ++i) out[i] = narrow<F16>(in[i]);
}

}  // namespace fastopt::cpu
