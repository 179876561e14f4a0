// Multi-tensor launches: one kernel launch updates up to K tensors (multi_tensor_plan.h), one block
// per chunk of kChunkElements elements, so a 150-tensor model costs two or three launches.
//
// Pieces, kept apart:
//   Storage<E>         how an element type is stored (raw bits) and converted to the math type
//   load_vector/...    vector loads and stores (one 8- or 16-byte access per operand), single elements
//   update_chunk       one block's work over one chunk: the vector loop (every operand aligned)
//                      then the scalar loop (misaligned tensors, tails); per element it calls
//                      op.apply(), which calls the shared per-element rule (fastopt/*.h)
//   probe_chunk        the non-finite gradient test over one chunk (skip_nonfinite's pre-pass)
//   plan_*             host: cut a list into batches, each with its whole kernel argument
//   *_kernel           the __global__ wrappers (thread/block indices, shared memory, the flag)
//   launch_*           host: plan and launch on the queue's stream, each launch error-checked
//
// The chunk bodies are __host__ __device__ and take the thread index and count as arguments, so a
// host program can run them thread by thread (tests/cuda_host) where no GPU is available.
//
// An update op (optim_ops.cuh) provides:
//   kOperands, kUsed (bit j: operand j is read or written), kWritten (bit j: written)
//   Consts                  the per-call constants of the rule (the *Scalars struct, plus flags)
//   consts                  those constants computed on the host
//   on_device()             true when lr or step must be read on the device (DeviceHyper)
//   device_consts()         the constants computed from the device values (run by one thread)
//   read_mask(c)            operands read (kUsed, minus any the constants make unnecessary)
//   apply(c, e)             one element: e[j] is operand j in the math type
// Operands 0 and 1 (param, grad) have the parameter type T, the others the state type S.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "cuda/check.cuh"
#include "cuda/multi_tensor_plan.h"
#include "fastopt/grad_scale.h"
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

// Elements per thread and iteration: 4, or 2 for float64 (16 bytes of float32 / float64, 8 bytes of
// float16 / bfloat16 with 16 bytes of their float32 state). Wider (8 halves, 4 doubles) would double
// the registers holding an iteration's operands and halve the resident threads: the bytes in flight
// per SM, which set the bandwidth, stay the same.
template <typename T>
constexpr int ilp_of() {
  return sizeof(T) == 8 ? 2 : 4;
}

// Resident blocks per SM the update kernels are compiled for (__launch_bounds__): 2 x 512 threads
// caps a float32 kernel at 64 registers (a few bytes of spill in the largest, centered RMSprop with
// momentum), half the threads an SM can hold; float64 kernels get 128 registers (at 64 they spill
// in their loops).
template <typename M>
constexpr int blocks_per_sm() {
  return sizeof(M) == 8 ? 1 : 2;
}

// The alignment a vectorised tensor needs for an operand of type E: one vector (ILP elements).
template <typename T, typename E>
constexpr int vector_alignment() {
  return int(ilp_of<T>() * sizeof(E));
}

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

// ---------------------------------------------------------------- compile-time operand loop

template <typename T, typename S, int J>
using OperandType = std::conditional_t<(J < 2), T, S>;

template <typename F, int... J>
FASTOPT_HD void for_operands_impl(F& f, std::integer_sequence<int, J...>) {
  (f(std::integral_constant<int, J>{}), ...);
}

// f(std::integral_constant<int, j>) for j = 0 .. N-1, so that each operand's type is a constant.
template <int N, typename F>
FASTOPT_HD void for_operands(F&& f) {
  for_operands_impl(f, std::make_integer_sequence<int, N>{});
}

// ---------------------------------------------------------------- chunk bodies

// Where one block works: tensor k of the batch, elements [begin, begin + n) of it.
struct ChunkSpan {
  int k;
  int64_t begin;
  int n;  // 1 .. kChunkElements
};

template <int N, int K>
FASTOPT_HD ChunkSpan chunk_of(const TensorBatch<N, K>& batch, int64_t block) {
  const int k = find_tensor(batch, block);
  const int64_t begin = (block - int64_t(batch.chunk_start[k])) * kChunkElements;
  const int64_t rest = batch.sizes[k] - begin;
  return {k, begin, rest < kChunkElements ? int(rest) : int(kChunkElements)};
}

// One block's share of an update: thread `tid` of `nthreads` updates its elements of the chunk.
// Vector loop: element groups [ILP*g, ILP*g + ILP) for g = tid, tid + nthreads, ...; then the
// scalar loop from the first element the vector loop did not cover (0 for a misaligned tensor),
// ILP elements per thread per iteration, tid + i * nthreads apart (coalesced).
template <typename Op, typename T, typename S, int K>
FASTOPT_HD void update_chunk(const TensorBatch<Op::kOperands, K>& batch, const Op& op,
                             const typename Op::Consts& c, int64_t block, int tid, int nthreads) {
  constexpr int N = Op::kOperands;
  constexpr int ILP = ilp_of<T>();
  using M = MathOf<T>;
  static_assert(std::is_same_v<M, MathOf<S>>, "parameter and state share the math type");

  const ChunkSpan span = chunk_of(batch, block);
  const unsigned reads = op.read_mask(c) & Op::kUsed;
  // operand bases at the chunk's first element (only those in use: the others may be null)
  void* base[N];
  for_operands<N>([&](auto J) {
    constexpr int j = decltype(J)::value;
    using E = OperandType<T, S, j>;
    base[j] = ((Op::kUsed >> j) & 1u) ? static_cast<void*>(static_cast<E*>(batch.ptrs[span.k][j]) + span.begin)
                                      : nullptr;
  });

  int scalar_from = 0;
  if (batch.vectorised[span.k]) {
    const int groups = span.n / ILP;
    for (int g = tid; g < groups; g += nthreads) {
      const int offset = g * ILP;
      M e[ILP][N] = {};
      for_operands<N>([&](auto J) {
        constexpr int j = decltype(J)::value;
        using E = OperandType<T, S, j>;
        if constexpr ((Op::kUsed >> j) & 1u) {
          if ((reads >> j) & 1u) {
            M x[ILP];
            load_vector<E, ILP, j == 1>(static_cast<const E*>(base[j]) + offset, x);
            FASTOPT_UNROLL
            for (int i = 0; i < ILP; ++i) e[i][j] = x[i];
          }
        }
      });
      FASTOPT_UNROLL
      for (int i = 0; i < ILP; ++i) op.apply(c, e[i]);
      for_operands<N>([&](auto J) {
        constexpr int j = decltype(J)::value;
        using E = OperandType<T, S, j>;
        if constexpr ((Op::kWritten >> j) & 1u) {
          M x[ILP];
          FASTOPT_UNROLL
          for (int i = 0; i < ILP; ++i) x[i] = e[i][j];
          store_vector<E, ILP>(static_cast<E*>(base[j]) + offset, x);
        }
      });
    }
    scalar_from = groups * ILP;
  }

  for (int first = scalar_from + tid; first < span.n; first += nthreads * ILP) {
    M e[ILP][N] = {};
    for_operands<N>([&](auto J) {
      constexpr int j = decltype(J)::value;
      using E = OperandType<T, S, j>;
      if constexpr ((Op::kUsed >> j) & 1u) {
        if ((reads >> j) & 1u) {
          FASTOPT_UNROLL
          for (int i = 0; i < ILP; ++i) {
            const int at = first + i * nthreads;
            if (at < span.n) e[i][j] = load_one<E, j == 1>(static_cast<const E*>(base[j]) + at);
          }
        }
      }
    });
    FASTOPT_UNROLL
    for (int i = 0; i < ILP; ++i) {
      if (first + i * nthreads < span.n) op.apply(c, e[i]);
    }
    for_operands<N>([&](auto J) {
      constexpr int j = decltype(J)::value;
      using E = OperandType<T, S, j>;
      if constexpr ((Op::kWritten >> j) & 1u) {
        FASTOPT_UNROLL
        for (int i = 0; i < ILP; ++i) {
          const int at = first + i * nthreads;
          if (at < span.n) store_one<E>(static_cast<E*>(base[j]) + at, e[i][j]);
        }
      }
    });
  }
}

// The pre-pass of skip_nonfinite over one chunk of gradients (a one-operand batch): nonzero when
// any of this thread's unscaled gradients is NaN or +-Inf. Same loops as update_chunk.
template <typename T, int K>
FASTOPT_HD unsigned probe_chunk(const TensorBatch<1, K>& batch, MathOf<T> grad_scale, bool scaled, int64_t block,
                                int tid, int nthreads) {
  constexpr int ILP = ilp_of<T>();
  using M = MathOf<T>;
  const ChunkSpan span = chunk_of(batch, block);
  const T* g = static_cast<const T*>(batch.ptrs[span.k][0]) + span.begin;
  unsigned bad = 0;
  auto test = [&](M x) {
    const M u = scaled ? unscale_grad<true>(x, grad_scale) : unscale_grad<false>(x, grad_scale);
    bad |= unsigned(!is_finite_(u));
  };
  int scalar_from = 0;
  if (batch.vectorised[span.k]) {
    const int groups = span.n / ILP;
    for (int q = tid; q < groups; q += nthreads) {
      M x[ILP];
      load_vector<T, ILP, true>(g + q * ILP, x);
      FASTOPT_UNROLL
      for (int i = 0; i < ILP; ++i) test(x[i]);
    }
    scalar_from = groups * ILP;
  }
  for (int at = scalar_from + tid; at < span.n; at += nthreads) test(load_one<T, true>(g + at));
  return bad;
}

// ---------------------------------------------------------------- kernels

// The whole argument of an update launch (one __grid_constant__ parameter, at most 4 KB).
template <typename Op, int K>
struct UpdateArgs {
  TensorBatch<Op::kOperands, K> batch;
  Op op;
  const long long* found_inf;  // skip_nonfinite's flag (the kernel does nothing when set), or nullptr
};

template <typename T, int K>
struct ProbeArgs {
  TensorBatch<1, K> batch;
  MathOf<T> grad_scale;
  bool scaled;       // grad_scale != 1: divide
  long long* found;  // set to 1 by any block that sees a non-finite gradient
};

// ---------------------------------------------------------------- host planning
// The list was checked (list_problem) before: these cut it into batches and call
// launch(args, blocks) for each, with the whole kernel argument. The GPU launchers below launch
// the kernels; tests/cuda_host runs the chunk bodies thread by thread instead.

template <typename Op, typename T, typename S, int N, typename Launch>
void plan_updates(const DeviceTensorList<N>& list, const Op& op, const long long* found_inf, Launch&& launch) {
  static_assert(N == Op::kOperands, "the op's operand count is the list's");
  constexpr int K = tensors_per_batch<N>();
  using Args = UpdateArgs<Op, K>;
  static_assert(sizeof(Args) <= kKernelArgBytes, "update kernel arguments over 4 KB");
  static_assert(std::is_trivially_copyable_v<Args>, "kernel arguments are copied bytewise");
  int alignment[N];
  for_operands<N>([&](auto J) {
    alignment[decltype(J)::value] = vector_alignment<T, OperandType<T, S, decltype(J)::value>>();
  });
  plan_batches<N, K>(
      list.sizes.size(), list.sizes.data(), [&](size_t k, int j) { return list.ptrs[k][j]; }, Op::kUsed, alignment,
      [&](const TensorBatch<N, K>& batch, int64_t blocks) {
        Args args;
        args.batch = batch;
        args.op = op;
        args.found_inf = found_inf;
        launch(static_cast<const Args&>(args), blocks);
      });
}

// The pre-pass over operand `grad` of each tensor of a list.
template <typename T, int N, typename Launch>
void plan_probe(const DeviceTensorList<N>& list, int grad, double grad_scale, long long* found, Launch&& launch) {
  constexpr int K = tensors_per_batch<1>();
  using Args = ProbeArgs<T, K>;
  static_assert(sizeof(Args) <= kKernelArgBytes, "probe kernel arguments over 4 KB");
  static_assert(std::is_trivially_copyable_v<Args>, "kernel arguments are copied bytewise");
  const int alignment[1] = {vector_alignment<T, T>()};
  plan_batches<1, K>(
      list.sizes.size(), list.sizes.data(), [&](size_t k, int) { return list.ptrs[k][grad]; }, 1u, alignment,
      [&](const TensorBatch<1, K>& batch, int64_t blocks) {
        Args args;
        args.batch = batch;
        args.grad_scale = MathOf<T>(grad_scale);
        args.scaled = grad_scale != 1.0;
        args.found = found;
        launch(static_cast<const Args&>(args), blocks);
      });
}

// ---------------------------------------------------------------- kernels

template <typename Op, typename T, typename S, int K>
__global__ void __launch_bounds__(kBlockThreads, blocks_per_sm<MathOf<T>>())
    update_kernel(const __grid_constant__ UpdateArgs<Op, K> a) {
  // The flag was written by the pre-pass, an earlier kernel on this stream: the same value for
  // every thread, so a block returns as a whole.
  if (a.found_inf != nullptr && *a.found_inf != 0) return;
  // The constants go through shared memory: one thread computes them when lr / step live on the
  // device (in double: pow and divisions, too slow to repeat in every thread on chips with slow
  // float64), or copies the host's. One code path for both keeps the kernels small.
  using Consts = typename Op::Consts;
  __shared__ Consts consts;
  if (threadIdx.x == 0) consts = a.op.on_device() ? a.op.device_consts() : a.op.consts;
  __syncthreads();
  update_chunk<Op, T, S, K>(a.batch, a.op, consts, int64_t(blockIdx.x), int(threadIdx.x), int(blockDim.x));
}

template <typename T, int K>
__global__ void __launch_bounds__(kBlockThreads, 2) probe_kernel(const __grid_constant__ ProbeArgs<T, K> a) {
  const unsigned bad = probe_chunk<T, K>(a.batch, a.grad_scale, a.scaled, int64_t(blockIdx.x), int(threadIdx.x),
                                         int(blockDim.x));
  // Every block that finds one stores the same 1: the result does not depend on the order.
  if (__syncthreads_or(bad != 0) && threadIdx.x == 0) *a.found = 1;
}

// ---------------------------------------------------------------- GPU launchers

template <typename Op, typename T, typename S, int N>
void launch_updates(const DeviceTensorList<N>& list, const Op& op, const long long* found_inf,
                    cudaStream_t stream, const char* name) {
  plan_updates<Op, T, S>(list, op, found_inf, [&](const auto& args, int64_t blocks) {
    constexpr int K = std::decay_t<decltype(args.batch)>::kCapacity;
    update_kernel<Op, T, S, K><<<dim3(unsigned(blocks)), dim3(kBlockThreads), 0, stream>>>(args);
    check_launch(name);
  });
}

template <typename T, int N>
void launch_probe(const DeviceTensorList<N>& list, int grad, double grad_scale, long long* found,
                  cudaStream_t stream) {
  plan_probe<T>(list, grad, grad_scale, found, [&](const auto& args, int64_t blocks) {
    constexpr int K = std::decay_t<decltype(args.batch)>::kCapacity;
    probe_kernel<T, K><<<dim3(unsigned(blocks)), dim3(kBlockThreads), 0, stream>>>(args);
    check_launch("nonfinite gradient pre-pass");
  });
}

}  // namespace fastopt::cuda
