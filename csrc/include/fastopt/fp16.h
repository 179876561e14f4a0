// float16 (IEEE 754 binary16) storage on the CPU: 1 sign bit, 5 exponent bits (bias 15), 10 mantissa
// bits. Written with integer and float32 operations only, without branches, so the loops that use them
// vectorise at every instruction set and give the same bits at each (no F16C/AVX512-FP16 needed).
//
// Loading widens exactly: a normal half's exponent is rebiased (+112) and its mantissa moved up 13
// bits; a subnormal m * 2^-24 is float(m) * 2^-24 (both factors exact); Inf/NaN keep their mantissa.
// Storing rounds to nearest, ties to even, as IEEE 754 and NumPy/PyTorch's conversions do:
//   |x| >= 65520 (half-way from the largest half, 65504, to 2^16) becomes +-Inf;
//   |x| <  2^-14 (below the smallest normal half) becomes a subnormal: |x| + 0.5f rounds |x| to a
//     multiple of 2^-24 (the float32 spacing at 0.5) ties to even, and the low bits of the sum count
//     those multiples (a count of 1024 is 2^-14, the smallest normal, whose bits it also is);
//   otherwise the exponent is rebiased (-112) and the 13 dropped mantissa bits rounded to nearest even
//     (a carry into the exponent is the right result, up to 65504 -> no overflow below 65520);
//   NaN stays NaN: the sign and the top 10 payload bits kept, the quiet bit set (0x7E00), as the F16C
//     instruction vcvtps2ph writes it (storage.h converts blocks with it where the CPU has it).
#pragma once

#include <cstdint>

#include "fastopt/bf16.h"

// Always inlined on the host: left to its heuristics GCC kept some copies of the element loops (the
// serial ones of parallel.h) calling an outlined float_to_f16, which stops them vectorising (20x slower).
#if defined(__CUDACC__) || !defined(__GNUC__)
#define FASTOPT_HALF_CONVERSION FASTOPT_HD
#else
#define FASTOPT_HALF_CONVERSION FASTOPT_HD __attribute__((always_inline))
#endif

namespace fastopt {

FASTOPT_HALF_CONVERSION float f16_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  const uint32_t normal = ((exponent + 112u) << 23) | (mantissa << 13);
  const uint32_t special = 0x7F800000u | (mantissa << 13);                 // Inf, NaN
  const uint32_t subnormal = float_bits(float(int32_t(mantissa)) * 0x1p-24f);  // and zero
  // (masks, not a ?: chain, which GCC turns into branches that stop the loops vectorising)
  const uint32_t is_subnormal = 0u - uint32_t(exponent == 0), is_special = 0u - uint32_t(exponent == 0x1Fu);
  const uint32_t magnitude =
      (subnormal & is_subnormal) | (special & is_special) | (normal & ~(is_subnormal | is_special));
  return bits_float(sign | magnitude);
}

FASTOPT_HALF_CONVERSION uint16_t float_to_f16(float x) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t normal = (a - (112u << 23) + 0xFFFu + ((a >> 13) & 1u)) >> 13;
  const uint32_t subnormal = float_bits(bits_float(a) + 0.5f) - float_bits(0.5f);
  const uint32_t is_nan = 0u - uint32_t(a > 0x7F800000u);
  const uint32_t is_inf = (0u - uint32_t(a >= 0x477FF000u)) & ~is_nan;  // rounds past 65504 (Inf too)
  const uint32_t is_subnormal = 0u - uint32_t(a < 0x38800000u);        // below 2^-14
  const uint32_t nan = 0x7E00u | ((a >> 13) & 0x3FFu);  // quiet, the payload's top bits (as F16C's vcvtps2ph)
  const uint32_t magnitude = (nan & is_nan) | (0x7C00u & is_inf) | (subnormal & is_subnormal) |
                             (normal & ~(is_nan | is_inf | is_subnormal));
  return uint16_t(sign | magnitude);
}

}  // namespace fastopt
