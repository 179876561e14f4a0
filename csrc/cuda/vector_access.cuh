// Vector and scalar access to global memory for the CUDA kernels: how an element type is stored and
// converted to its math type (Storage<E>), and one 8- or 16-byte access per thread (load_vector /
// store_vector) or one element (load_one / store_one). Used by the multi-tensor optimizer launches
// (multi_tensor.cuh) and meant for any kernel that streams arrays (the loss kernels' 16-byte loads).
//
// Everything is __host__ __device__ and works on raw bits, so the host simulation (tests/cuda_host)
// runs the same code; little-endian lanes, as on every CUDA device and host.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

#include "fastopt/macros.h"

// #pragma unroll for the device passes only (the host compiler of the host pass warns about it).
#ifdef __CUDA_ARCH__
#define FASTOPT_UNROLL _Pragma("unroll")
#else
#define FASTOPT_UNROLL
#endif

namespace fastopt::cuda {

// ---------------------------------------------------------------- element types

template <typename E>
struct Storage;

template <>
struct Storage<float> {
  using Math = float;
  using Raw = uint32_t;
  static FASTOPT_HD float to_math(float x) { return x; }
  static FASTOPT_HD float from_math(float x) { return x; }
  static FASTOPT_HD float from_raw(uint32_t r) {
    float x;
    std::memcpy(&x, &r, sizeof x);
    return x;
  }
  static FASTOPT_HD uint32_t to_raw(float x) {
    uint32_t r;
    std::memcpy(&r, &x, sizeof r);
    return r;
  }
};

template <>
struct Storage<double> {
  using Math = double;
  using Raw = unsigned long long;
  static FASTOPT_HD double to_math(double x) { return x; }
  static FASTOPT_HD double from_math(double x) { return x; }
  static FASTOPT_HD double from_raw(unsigned long long r) {
    double x;
    std::memcpy(&x, &r, sizeof x);
    return x;
  }
  static FASTOPT_HD unsigned long long to_raw(double x) {
    unsigned long long r;
    std::memcpy(&r, &x, sizeof r);
    return r;
  }
};

// Half types: the math runs in float; stores round to nearest even.
template <>
struct Storage<__half> {
  using Math = float;
  using Raw = unsigned short;
  static FASTOPT_HD float to_math(__half x) { return __half2float(x); }
  static FASTOPT_HD __half from_math(float x) { return __float2half_rn(x); }
  static FASTOPT_HD __half from_raw(unsigned short r) { return __ushort_as_half(r); }
  static FASTOPT_HD unsigned short to_raw(__half x) { return __half_as_ushort(x); }
};

template <>
struct Storage<__nv_bfloat16> {
  using Math = float;
  using Raw = unsigned short;
  static FASTOPT_HD float to_math(__nv_bfloat16 x) { return __bfloat162float(x); }
  static FASTOPT_HD __nv_bfloat16 from_math(float x) { return __float2bfloat16_rn(x); }
  static FASTOPT_HD __nv_bfloat16 from_raw(unsigned short r) { return __ushort_as_bfloat16(r); }
  static FASTOPT_HD unsigned short to_raw(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
};

template <typename E>
using MathOf = typename Storage<E>::Math;

// ---------------------------------------------------------------- global memory access
// Raw bits, plain loads and stores (nvcc infers the .global space for pointers from the kernel
// argument: LDG/STG in the SASS, weak, so freely scheduled); READ_ONLY (the gradients) takes the
// non-coherent read-only path (__ldg, LDG.CONSTANT). No other cache hints: every byte is touched
// once per call, and the .ca/.wb intrinsics come out as STRONG.SM accesses.

// One element or one vector word (uint2/uint4).
template <bool READ_ONLY, typename R>
FASTOPT_HD R load_raw(const R* p) {
#ifdef __CUDA_ARCH__
  if constexpr (READ_ONLY) return __ldg(p);
#endif
  return *p;
}

template <typename R>
FASTOPT_HD void store_raw(R* p, R v) {
  *p = v;
}

// One vector access: 8 bytes (uint2) or 16 bytes (uint4), as 32-bit words.
template <int BYTES>
struct VectorWord;
template <>
struct VectorWord<8> {
  using type = uint2;
  static FASTOPT_HD void split(uint2 v, uint32_t* w) { w[0] = v.x, w[1] = v.y; }
  static FASTOPT_HD uint2 join(const uint32_t* w) { return make_uint2(w[0], w[1]); }
};
template <>
struct VectorWord<16> {
  using type = uint4;
  static FASTOPT_HD void split(uint4 v, uint32_t* w) { w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w; }
  static FASTOPT_HD uint4 join(const uint32_t* w) { return make_uint4(w[0], w[1], w[2], w[3]); }
};

// 16-byte words <-> lanes of raw element bits (little-endian, as on every CUDA device and host).
template <typename R>
FASTOPT_HD R lane_of(const uint32_t* words, int i) {
  if constexpr (sizeof(R) == 2) {
    return R((words[i >> 1] >> (16 * (i & 1))) & 0xffffu);
  } else if constexpr (sizeof(R) == 4) {
    return R(words[i]);
  } else {
    return R(words[2 * i]) | (R(words[2 * i + 1]) << 32);
  }
}

template <typename R>
FASTOPT_HD void set_lane(uint32_t* words, int i, R r) {
  if constexpr (sizeof(R) == 2) {
    const int shift = 16 * (i & 1);
    words[i >> 1] = (words[i >> 1] & ~(0xffffu << shift)) | (uint32_t(r) << shift);
  } else if constexpr (sizeof(R) == 4) {
    words[i] = uint32_t(r);
  } else {
    words[2 * i] = uint32_t(r);
    words[2 * i + 1] = uint32_t(r >> 32);
  }
}

// ILP consecutive elements at src (aligned to ILP * sizeof(E), 8 or 16 bytes) in the math type: one
// vector load.
template <typename E, int ILP, bool READ_ONLY>
FASTOPT_HD void load_vector(const E* src, MathOf<E> (&out)[ILP]) {
  using S = Storage<E>;
  using W = VectorWord<int(ILP * sizeof(E))>;
  uint32_t words[ILP * sizeof(E) / 4];
  W::split(load_raw<READ_ONLY>(reinterpret_cast<const typename W::type*>(src)), words);
  FASTOPT_UNROLL
  for (int i = 0; i < ILP; ++i) out[i] = S::to_math(S::from_raw(lane_of<typename S::Raw>(words, i)));
}

template <typename E, int ILP>
FASTOPT_HD void store_vector(E* dst, const MathOf<E> (&in)[ILP]) {
  using S = Storage<E>;
  using W = VectorWord<int(ILP * sizeof(E))>;
  uint32_t words[ILP * sizeof(E) / 4] = {};
  FASTOPT_UNROLL
  for (int i = 0; i < ILP; ++i) set_lane<typename S::Raw>(words, i, S::to_raw(S::from_math(in[i])));
  store_raw(reinterpret_cast<typename W::type*>(dst), W::join(words));
}

template <typename E, bool READ_ONLY>
FASTOPT_HD MathOf<E> load_one(const E* src) {
  using S = Storage<E>;
  using R = typename S::Raw;
  return S::to_math(S::from_raw(load_raw<READ_ONLY>(reinterpret_cast<const R*>(src))));
}

template <typename E>
FASTOPT_HD void store_one(E* dst, MathOf<E> x) {
  using S = Storage<E>;
  using R = typename S::Raw;
  store_raw(reinterpret_cast<R*>(dst), S::to_raw(S::from_math(x)));
}

}  // namespace fastopt::cuda
