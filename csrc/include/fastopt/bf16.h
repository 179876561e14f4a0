// bfloat16 storage: the upper 16 bits of a float32. Loading widens exactly (the low 16 bits are 0);
// storing rounds the float32 to one of its two bfloat16 neighbours:
//
//   round-to-nearest-even (default): bits + 0x7FFF + ((bits >> 16) & 1), then keep the upper half.
//     Ties go to the even neighbour; values past the largest bfloat16 round to +-Inf.
//   stochastic: bits + r, then keep the upper half, where r is 16 random bits. A value x between
//     neighbours a < x < b becomes b with probability (x - a) / (b - a): unbiased in expectation.
//   NaN (either way): the sign kept, a quiet NaN 0x7FC0 (as ml_dtypes and Eigen write it); a payload
//     must not carry into the exponent. +-Inf stays +-Inf (its low half is 0: no carry).
//
// The random bits of stochastic rounding come from a counter-based hash, so they depend only on
// (seed, step, tensor, operand, element) and never on the thread count, the instruction set or
// (later) CPU versus GPU. With mix64 the finaliser of splitmix64 (Steele, Lea, Flood 2014):
//
//   mix64(z):  z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31
//   key       = mix64(mix64(mix64(seed) ^ step) ^ (tensor * 4 + operand))     (once per tensor and operand)
//   r(i)      = mix64(key + (i + 1) * 0x9E3779B97F4A7C15) >> 48               (element i of the tensor)
//
// that is, r(i) is the top 16 bits of the i-th output of splitmix64 seeded with key. tensor is the
// index in the call's lists, step the call's step, operand 0 = params, 1 = exp_avgs, 2 = exp_avg_sqs,
// 3 = max_exp_avg_sqs. All arithmetic is modulo 2**64.
#pragma once

#include <cstdint>
#include <cstring>

#include "fastopt/macros.h"

namespace fastopt {

FASTOPT_HD uint32_t float_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return u;
}

FASTOPT_HD float bits_float(uint32_t u) {
  float x;
  memcpy(&x, &u, sizeof x);
  return x;
}

FASTOPT_HD float bf16_to_float(uint16_t b) { return bits_float(uint32_t(b) << 16); }

FASTOPT_HD uint16_t bf16_nan(uint32_t u) { return uint16_t(((u >> 16) & 0x8000u) | 0x7FC0u); }

FASTOPT_HD bool bits_are_nan(uint32_t u) { return (u & 0x7FFFFFFFu) > 0x7F800000u; }

// Round-to-nearest-even.
FASTOPT_HD uint16_t float_to_bf16(float x) {
  const uint32_t u = float_bits(x);
  const uint16_t rounded = uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
  return bits_are_nan(u) ? bf16_nan(u) : rounded;
}

// Stochastic rounding with the 16 random bits r (the low 16 bits of `random`).
FASTOPT_HD uint16_t float_to_bf16_stochastic(float x, uint32_t random) {
  const uint32_t u = float_bits(x);
  const uint16_t rounded = uint16_t((u + (random & 0xFFFFu)) >> 16);
  return bits_are_nan(u) ? bf16_nan(u) : rounded;
}

FASTOPT_HD uint64_t mix64(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z;
}

constexpr uint64_t kSplitmixGamma = 0x9E3779B97F4A7C15ull;

// The key of one (tensor, operand) of a call.
FASTOPT_HD uint64_t rounding_key(uint64_t seed, uint64_t step, uint64_t tensor, uint64_t operand) {
  return mix64(mix64(mix64(seed) ^ step) ^ (tensor * 4u + operand));
}

// The 16 random bits of element i under `key`.
FASTOPT_HD uint32_t rounding_bits(uint64_t key, uint64_t i) {
  return uint32_t(mix64(key + (i + 1u) * kSplitmixGamma) >> 48);
}

}  // namespace fastopt
