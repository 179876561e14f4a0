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
// Nearest, as decision bounds: code c is taken by the x in [above[c-1], above[c]), where above[c] is the
// smallest float32 greater than the midpoint (map[c] + map[c+1]) / 2 (computed in double, where it is
// exact). So x goes to the nearer of its two neighbouring map values, the lower one on a tie (the first
// minimum of |x - map|, as an argmin over the map picks); x below map[0] gets code 0, above map[255] code
// 255. The code is the count of bounds <= x, read from one lookup table indexed by x's float32 bit
// pattern: the bucket is the sign, the exponent clamped to [2^-31, 2) and the top 7 mantissa bits (2^13
// buckets; 32 KB a table, so it stays in the L1 cache), and its entry holds the count at the bucket's
// lowest value and, when a bound lies inside the bucket, where: the bound's low 16 mantissa bits, as an
// order key that grows with the value (kQuantNoBound when none). One table read, one compare of x's own
// key with the entry's, integer work, no branch: the loops vectorise with one gather per element. Exact
// when no bucket holds two bounds and no bound lies in a bucket that clamps its exponent;
// build_quant8_tables checks both for the map it is given (both dynamic maps pass). The inputs are
// x / absmax, in [-1, 1]. A block whose absmax is 0 (all zeros) is stored as the code of the map's 0 with
// absmax 0.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "fastopt/macros.h"

namespace fastopt {

constexpr int64_t kQuantBlock = 256;

constexpr int kQuantMantissaBits = 7;          // the mantissa bits in a bucket's index
constexpr int kQuantKeyBits = 23 - kQuantMantissaBits;  // the rest: the order key within the bucket
constexpr uint32_t kQuantKeyMask = (1u << kQuantKeyBits) - 1;
constexpr int kQuantLutBits = 1 + 5 + kQuantMantissaBits;  // sign, 5 exponent bits, mantissa bits
constexpr uint32_t kQuantLowExponent = 96;     // biased exponent of 2^-31; smaller ones share its buckets
constexpr uint32_t kQuantLutSize = 1u << kQuantLutBits;

constexpr uint32_t kQuantNoBound = kQuantKeyMask + 1;  // above every order key: no bound in the bucket
constexpr int kQuantCountShift = kQuantKeyBits + 1;  // an entry: count << kQuantCountShift | key

// A map and its lookup table.
struct Quant8Map {
  const float* values = nullptr;  // 256 sorted values
  const int32_t* lut = nullptr;   // kQuantLutSize entries: count << kQuantCountShift | order key
};

// The table a Quant8Map points at (one per registered map; int32: the vectorised loops gather it).
struct Quant8Tables {
  int32_t lut[kQuantLutSize];
};

FASTOPT_HD uint32_t quant8_bucket(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  uint32_t e = (u >> 23) & 0xFFu;
  e = e < kQuantLowExponent ? kQuantLowExponent : (e > kQuantLowExponent + 31 ? kQuantLowExponent + 31 : e);
  return ((u >> 31) << (5 + kQuantMantissaBits)) | ((e - kQuantLowExponent) << kQuantMantissaBits) |
         ((u >> kQuantKeyBits) & ((1u << kQuantMantissaBits) - 1));
}

// x's place within its bucket: the low kQuantKeyBits mantissa bits, reversed for negative x (there a larger
// magnitude is a smaller value), so that within one unclamped bucket x < y exactly when key(x) < key(y).
FASTOPT_HD uint32_t quant8_order_key(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return (u & kQuantKeyMask) ^ ((u >> 31) * kQuantKeyMask);
}

// The code from x's table entry and order key.
FASTOPT_HD uint8_t quant8_code(uint32_t entry, uint32_t key) {
  const uint32_t bound = entry & ((1u << kQuantCountShift) - 1);  // the bound's key, or kQuantNoBound
  return uint8_t((entry >> kQuantCountShift) + (key >= bound ? 1u : 0u));
}

FASTOPT_HD uint8_t quant8_nearest(const Quant8Map& q, float x) {
  return quant8_code(uint32_t(q.lut[quant8_bucket(x)]), quant8_order_key(x));
}

// The lowest and highest float32 of bucket b (for the clamped exponents: of all values sharing it, within
// [-2, 2]).
inline void quant8_bucket_range(uint32_t b, float& lowest, float& highest) {
  const uint32_t sign = b >> (5 + kQuantMantissaBits), e = ((b >> kQuantMantissaBits) & 31u) + kQuantLowExponent;
  const uint32_t m = b & ((1u << kQuantMantissaBits) - 1);
  uint32_t small = (e << 23) | (m << kQuantKeyBits), large = small | kQuantKeyMask;
  if (e == kQuantLowExponent) small = 0;  // down to 0: every smaller exponent shares these buckets
  float lo, hi;
  memcpy(&lo, &small, sizeof lo);
  memcpy(&hi, &large, sizeof hi);
  lowest = sign ? -hi : lo;
  highest = sign ? -lo : hi;
}

// The smallest float32 greater than the double d (|d| well inside float32's range).
inline float float_above(double d) {
  float f = float(d);
  if (double(f) <= d) f = nextafterf(f, INFINITY);
  return f;
}

// Fills t for the sorted map `values`; false when the table cannot be exact for it: a bucket holds two
// bounds, or a bound lies in a bucket whose exponent is clamped (it shares the bucket with other exponents,
// so its low mantissa bits do not order them).
inline bool build_quant8_tables(const float* values, Quant8Tables& t) {
  float above[255];
  for (int c = 0; c < 255; ++c) above[c] = float_above((double(values[c]) + double(values[c + 1])) / 2.0);
  auto count = [&](float v) {
    int c = 0;
    while (c < 255 && above[c] <= v) ++c;
    return c;
  };
  for (uint32_t b = 0; b < kQuantLutSize; ++b) {
    float lowest, highest;
    quant8_bucket_range(b, lowest, highest);
    const int low = count(lowest), high = count(highest);
    const uint32_t exponent = (b >> kQuantMantissaBits) & 31u;
    if (high - low > 1 || (high > low && (exponent == 0 || exponent == 31))) return false;
    // lowest itself is counted in low, so a bound inside lies in (lowest, highest]
    const uint32_t key = high > low ? quant8_order_key(above[low]) : kQuantNoBound;
    t.lut[b] = int32_t((uint32_t(low) << kQuantCountShift) | key);
  }
  return true;
}

}  // namespace fastopt
