// Blockwise dynamic 8-bit quantisation (Dettmers et al. 2022, "8-bit Optimizers via Block-wise
// Quantization"), the layout of bitsandbytes' 8-bit optimizers: a tensor of n values is cut into blocks
// of kQuantBlock (256) consecutive elements (the last one may be shorter); block b keeps one float32
// absmax[b] = max |x| over the block, and each element one uint8 code c, the index of the map value
// nearest to x / absmax[b]. A value is read back as map[c] * absmax[b].
//
// The maps (256 sorted float32 values in [-1, 1] or [0, 1], bitsandbytes' create_dynamic_map: signed
// for first moments, unsigned for second moments) are built on the Python side
// (fastopt/_quantized.py) and handed to the kernels; this header only uses them.
//
// Nearest: i, the number of map values <= x, comes from a lookup table indexed by x's float32 bit
// pattern (sign, exponent clamped to [2^-31, 2), the top 8 mantissa bits: 2^14 buckets): the table holds
// the count at the bucket's lowest value, and one compare with the next map value finishes it, which is
// exact when no bucket holds two map values (build_quant8_lut checks that for the map it is given; both
// dynamic maps pass). Then x goes to map[i-1] or map[i], whichever is closer, the lower one on a tie (the
// first minimum of |x - map|, as an argmin over the map picks); x below map[0] gets code 0, above map[255]
// code 255. The inputs are x / absmax, in [-1, 1]. A block whose absmax is 0 (all zeros) is stored as
// the code of the map's 0 with absmax 0.
#pragma once

#include <cstdint>
#include <cstring>

#include "fastopt/macros.h"

namespace fastopt {

constexpr int64_t kQuantBlock = 256;

constexpr int kQuantLutBits = 14;              // sign, 5 exponent bits, 8 mantissa bits
constexpr uint32_t kQuantLowExponent = 96;     // biased exponent of 2^-31; smaller ones share its buckets
constexpr uint32_t kQuantLutSize = 1u << kQuantLutBits;

// A map and its lookup table (min(count, 255) of map values <= each bucket's lowest value).
struct Quant8Map {
  const float* values = nullptr;  // 256 sorted values
  const int32_t* lut = nullptr;   // kQuantLutSize entries (int32: the vectorised loops gather them)
};

FASTOPT_HD uint32_t quant8_bucket(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  uint32_t e = (u >> 23) & 0xFFu;
  e = e < kQuantLowExponent ? kQuantLowExponent : (e > kQuantLowExponent + 31 ? kQuantLowExponent + 31 : e);
  return ((u >> 31) << 13) | ((e - kQuantLowExponent) << 8) | ((u >> 15) & 0xFFu);
}

FASTOPT_HD uint8_t quant8_nearest(const Quant8Map& q, float x) {
  const float* map = q.values;
  int i = q.lut[quant8_bucket(x)];
  i += (map[i] <= x) ? 1 : 0;  // the number of map values <= x (0..256)
  // (branch-free, so the element loop vectorises: i == 0 compares map[0] with itself, i == 256 map[255])
  const int lower = i > 0 ? i - 1 : 0, upper = i < 256 ? i : 255;
  // x is nearer the upper value when x - lower > upper - x, that is 2x > lower + upper, computed in double,
  // where both sides are exact: a tie goes to the lower code
  return uint8_t(2.0 * double(x) > double(map[lower]) + double(map[upper]) ? upper : lower);
}

// The lowest and highest float32 of bucket b (for the clamped exponents: of all values sharing it, within
// [-2, 2]).
inline void quant8_bucket_range(uint32_t b, float& lowest, float& highest) {
  const uint32_t sign = b >> 13, e = ((b >> 8) & 31u) + kQuantLowExponent, m = b & 0xFFu;
  uint32_t small = (e << 23) | (m << 15), large = small | 0x7FFFu;
  if (e == kQuantLowExponent) small = 0;  // down to 0: every smaller exponent shares these buckets
  float lo, hi;
  memcpy(&lo, &small, sizeof lo);
  memcpy(&hi, &large, sizeof hi);
  lowest = sign ? -hi : lo;
  highest = sign ? -lo : hi;
}

// Fills lut for the sorted map `values`; false when a bucket holds two map values (the table would not
// be exact for it).
inline bool build_quant8_lut(const float* values, int32_t* lut) {
  auto count = [&](float v) {
    int c = 0;
    while (c < 256 && values[c] <= v) ++c;
    return c;
  };
  for (uint32_t b = 0; b < kQuantLutSize; ++b) {
    float lowest, highest;
    quant8_bucket_range(b, lowest, highest);
    const int low = count(lowest), high = count(highest);
    if (high - low > 1) return false;
    lut[b] = low > 255 ? 255 : low;
  }
  return true;
}

}  // namespace fastopt
