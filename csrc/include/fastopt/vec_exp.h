// exp written as branch-free arithmetic, so that loops calling it vectorise with any instruction
// set (the compiler turns the selects into blends), and every instruction set gives the same bits.
//
// Method (Cephes): n = round(x / ln2), r = x - n*ln2 in [-ln2/2, ln2/2] (ln2 split in a short
// high part and a correction, so n*ln2_hi is exact), exp(r) from a polynomial (float) or a Pade
// form (double), times 2^n built in the exponent bits.
// Accuracy, tested against float64/long double in tests: float within 2 ulp on [-87.3, 88.7],
// double within 2 ulp on [-708, 709]. Below that range the result is 0 (no denormals), above it +inf;
// exp(-inf) = 0 exactly (softmax masks), NaN stays NaN.
#pragma once

#include <cstdint>
#include <cstring>
#include <limits>

#include "fastopt/macros.h"

namespace fastopt {

namespace detail {

// The exponent fields are shifted as unsigned integers: for NaN or out-of-range x the biased exponent
// can be negative, and shifting a negative signed value is undefined behaviour (UBSan reports it);
// those lanes' results are discarded or NaN anyway.

FASTOPT_HD float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

FASTOPT_HD double bits_to_double(uint64_t bits) {
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

// The float method's core for an argument already clamped to the finite range: returns exp(r) and
// sets n, with exp(xc) = exp(r) * 2^n.
FASTOPT_HD float expf_reduced(float xc, float& n) {
  // round(xc / ln2) by the 1.5 * 2^23 trick: exact for |xc / ln2| < 2^22
  const float shifter = 12582912.0f;
  n = (xc * 1.44269504088896341f + shifter) - shifter;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * (r * r) + r + 1.0f;
}

}  // namespace detail

FASTOPT_HD float vexp(float x) {
  const float hi = 88.72283935546875f, lo = -87.33654022216797f;
  const float xc = x > hi ? hi : (x < lo ? lo : x);  // NaN passes through both tests
  float n;
  const float er = detail::expf_reduced(xc, n);
  // 2^n in two halves, so that n = 128 (x near the top of the range) stays representable.
  const int32_t ni = int32_t(n);
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  const float result = er * detail::bits_to_float(uint32_t(n1 + 127) << 23) *
                       detail::bits_to_float(uint32_t(n2 + 127) << 23);
  if (x > hi) return std::numeric_limits<float>::infinity();
  return x < lo ? 0.0f : result;
}

FASTOPT_HD double vexp(double x) {
  const double hi = 709.782712893384, lo = -708.3964185322641;
  const double xc = x > hi ? hi : (x < lo ? lo : x);
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52
  const double n = (xc * 1.4426950408889634074 + shifter) - shifter;
  double r = xc - n * 6.93145751953125e-1;
  r = r - n * 1.42860682030941723212e-6;
  // exp(r) = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2))
  const double rr = r * r;
  const double px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr +
                         9.99999999999999999910e-1);
  const double qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr +
                     2.27265548208155028766e-1) * rr + 2.00000000000000000009e0;
  const double er = 1.0 + 2.0 * (px / (qx - px));
  const int64_t ni = int64_t(n);
  const int64_t n1 = ni >> 1, n2 = ni - n1;
  const double result = er * detail::bits_to_double(uint64_t(n1 + 1023) << 52) *
                        detail::bits_to_double(uint64_t(n2 + 1023) << 52);
  if (x > hi) return std::numeric_limits<double>::infinity();
  return x < lo ? 0.0 : result;
}

// exp(x) for x <= 0, as softmax needs it (scores minus their max): no overflow to guard against,
// so 2^n is one exponent field (n in [-126, 0]) and the upper clamp goes. Same polynomial and
// accuracy as vexp on [-87.3, 0]; below, 0.
FASTOPT_HD float vexp_nonpositive(float x) {
  const float lo = -87.33654022216797f;
  const float xc = x < lo ? lo : x;
  float n;
  const float er = detail::expf_reduced(xc, n);
  const float result = er * detail::bits_to_float(uint32_t(int32_t(n) + 127) << 23);
  return x < lo ? 0.0f : result;
}

FASTOPT_HD double vexp_nonpositive(double x) { return vexp(x); }

}  // namespace fastopt
