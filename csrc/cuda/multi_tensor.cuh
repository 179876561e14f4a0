// Multi-tensor launches: one kernel launch updates up to K tensors (multi_tensor_plan.h), one block
// per chunk of kChunkElements elements: a 148-tensor model in one launch where the larger kernel
// arguments of CUDA 12.1+ are available, in three otherwise.
//
// Pieces, kept apart:
//   vector_access.cuh  how an element type is stored, vector and single-element loads and stores
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
//   Math                    the math type (float for half parameters)
//   on_device()             true when lr or step must be read on the device (DeviceHyper)
//   device_consts()         the constants computed from the device values (run by one thread)
//   skipped()               true when a device found_inf flag is set (read by one thread per block)
//   unscale()               the gradient's unscaling, GradUnscale<Math> (may read a device scale)
//   read_mask(c)            operands read (kUsed, minus any the constants make unnecessary)
//   apply(c, e)             one element: e[j] is operand j in the math type, e[1] the gradient
//                           already unscaled
// Operands 0 and 1 (param, grad) have the parameter type T, the others the state type S.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "cuda/check.cuh"
#include "cuda/device_scalars.cuh"
#include "cuda/multi_tensor_plan.h"
#include "cuda/vector_access.cuh"
#include "fastopt/grad_scale.h"
#include "fastopt/macros.h"

namespace fastopt::cuda {

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
// ILP elements per thread per iteration, tid + i * nthreads apart (coalesced). The gradient
// (operand 1, never written) is unscaled with `unscale` as it is loaded.
template <typename Op, typename T, typename S, int K>
FASTOPT_HD void update_chunk(const TensorBatch<Op::kOperands, K>& batch, const Op& op,
                             const typename Op::Consts& c, const GradUnscale<MathOf<T>>& unscale, int64_t block,
                             int tid, int nthreads) {
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
            for (int i = 0; i < ILP; ++i) e[i][j] = j == 1 ? unscale(x[i]) : x[i];
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
            if (at < span.n) {
              const M x = load_one<E, j == 1>(static_cast<const E*>(base[j]) + at);
              e[i][j] = j == 1 ? unscale(x) : x;
            }
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
FASTOPT_HD unsigned probe_chunk(const TensorBatch<1, K>& batch, const GradUnscale<MathOf<T>>& unscale, int64_t block,
                                int tid, int nthreads) {
  constexpr int ILP = ilp_of<T>();
  using M = MathOf<T>;
  const ChunkSpan span = chunk_of(batch, block);
  const T* g = static_cast<const T*>(batch.ptrs[span.k][0]) + span.begin;
  unsigned bad = 0;
  auto test = [&](M x) { bad |= unsigned(!is_finite_(unscale(x))); };
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

// The whole argument of an update launch (one __grid_constant__ parameter: at most 4 KB, or 32 KB
// where the larger argument space is in use).
template <typename Op, int K>
struct UpdateArgs {
  TensorBatch<Op::kOperands, K> batch;
  Op op;
  const long long* found_inf;  // skip_nonfinite's flag (the kernel does nothing when set), or nullptr
};

template <typename T, int K>
struct ProbeArgs {
  TensorBatch<1, K> batch;
  GradScaleSource scale;  // the host's grad_scale, or a device one
  long long* found;       // set to 1 by any block that sees a non-finite gradient
};

// What a block needs before its chunk, worked out by one thread: the constants and the gradient's
// unscaling (each may read device values). False when the update is skipped: skip_nonfinite's flag,
// or a device found_inf, is set. The kernel and the host simulation both start a block with it.
template <typename Op, int K>
FASTOPT_HD bool prepare_block(const UpdateArgs<Op, K>& a, typename Op::Consts& consts,
                              GradUnscale<typename Op::Math>& unscale) {
  if (a.found_inf != nullptr && *a.found_inf != 0) return false;
  if (a.op.skipped()) return false;
  consts = a.op.on_device() ? a.op.device_consts() : a.op.consts;
  unscale = a.op.unscale();
  return true;
}

// ---------------------------------------------------------------- host planning
// The list was checked (list_problem) before: these cut it into batches and call
// launch(args, blocks) for each, with the whole kernel argument (`launch` takes either size of
// argument: a generic lambda). The GPU launchers below launch the kernels; tests/cuda_host runs the
// chunk bodies thread by thread instead.

// Whether a list goes in the larger argument space: where it is compiled in and available
// (large_args, from the runner), and only when the list does not fit one 4 KB launch, so that short
// lists keep the smaller argument copy per launch.
template <int N>
bool use_large_args(const DeviceTensorList<N>& list, bool large_args) {
  if constexpr (!kLargeArgsCompiled) {
    return false;
  } else {
    return large_args && !fits_one_batch(list.sizes.size(), list.sizes.data(), tensors_per_batch<N>());
  }
}

template <typename Op, typename T, typename S, size_t BATCH_BYTES, int N, typename Launch>
void plan_updates_in(const DeviceTensorList<N>& list, const Op& op, const long long* found_inf, Launch&& launch) {
  static_assert(N == Op::kOperands, "the op's operand count is the list's");
  constexpr int K = tensors_per_batch<N, BATCH_BYTES>();
  using Args = UpdateArgs<Op, K>;
  static_assert(sizeof(Args) <= BATCH_BYTES + kArgReserve, "update kernel arguments over the argument space");
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

template <typename Op, typename T, typename S, int N, typename Launch>
void plan_updates(const DeviceTensorList<N>& list, const Op& op, const long long* found_inf, bool large_args,
                  Launch&& launch) {
  if constexpr (kLargeArgsCompiled) {
    if (use_large_args(list, large_args)) {
      plan_updates_in<Op, T, S, kLargeBatchBytes>(list, op, found_inf, launch);
      return;
    }
  }
  plan_updates_in<Op, T, S, kBatchBytes>(list, op, found_inf, launch);
}

// The pre-pass over operand `grad` of each tensor of a list.
template <typename T, size_t BATCH_BYTES, int N, typename Launch>
void plan_probe_in(const DeviceTensorList<N>& list, int grad, const GradScaleSource& scale, long long* found,
                   Launch&& launch) {
  constexpr int K = tensors_per_batch<1, BATCH_BYTES>();
  using Args = ProbeArgs<T, K>;
  static_assert(sizeof(Args) <= BATCH_BYTES + kArgReserve, "probe kernel arguments over the argument space");
  static_assert(std::is_trivially_copyable_v<Args>, "kernel arguments are copied bytewise");
  const int alignment[1] = {vector_alignment<T, T>()};
  plan_batches<1, K>(
      list.sizes.size(), list.sizes.data(), [&](size_t k, int) { return list.ptrs[k][grad]; }, 1u, alignment,
      [&](const TensorBatch<1, K>& batch, int64_t blocks) {
        Args args;
        args.batch = batch;
        args.scale = scale;
        args.found = found;
        launch(static_cast<const Args&>(args), blocks);
      });
}

template <typename T, int N, typename Launch>
void plan_probe(const DeviceTensorList<N>& list, int grad, const GradScaleSource& scale, long long* found,
                bool large_args, Launch&& launch) {
  if constexpr (kLargeArgsCompiled) {
    if (large_args && !fits_one_batch(list.sizes.size(), list.sizes.data(), tensors_per_batch<1>())) {
      plan_probe_in<T, kLargeBatchBytes>(list, grad, scale, found, launch);
      return;
    }
  }
  plan_probe_in<T, kBatchBytes>(list, grad, scale, found, launch);
}

// ---------------------------------------------------------------- kernels

template <typename Op, typename T, typename S, int K>
__global__ void __launch_bounds__(kBlockThreads, blocks_per_sm<MathOf<T>>())
    update_kernel(const __grid_constant__ UpdateArgs<Op, K> a) {
  // One thread reads the flags and works out the constants (when lr / step live on the device, in
  // double: pow and divisions, too slow to repeat in every thread on chips with slow float64) and
  // the unscaling; they reach the block through shared memory. The flags were written by earlier
  // work on this stream (the pre-pass, GradScaler's check): the whole block returns together.
  using Consts = typename Op::Consts;
  __shared__ Consts consts;
  __shared__ GradUnscale<MathOf<T>> unscale;
  __shared__ bool run;
  if (threadIdx.x == 0) run = prepare_block(a, consts, unscale);
  __syncthreads();
  if (!run) return;
  update_chunk<Op, T, S, K>(a.batch, a.op, consts, unscale, int64_t(blockIdx.x), int(threadIdx.x),
                            int(blockDim.x));
}

template <typename T, int K>
__global__ void __launch_bounds__(kBlockThreads, 2) probe_kernel(const __grid_constant__ ProbeArgs<T, K> a) {
  const unsigned bad = probe_chunk<T, K>(a.batch, a.scale.template resolve<MathOf<T>>(), int64_t(blockIdx.x),
                                         int(threadIdx.x), int(blockDim.x));
  // Every block that finds one stores the same 1: the result does not depend on the order.
  if (__syncthreads_or(bad != 0) && threadIdx.x == 0) *a.found = 1;
}

// ---------------------------------------------------------------- GPU launchers

template <typename Op, typename T, typename S, int N>
void launch_updates(const DeviceTensorList<N>& list, const Op& op, const long long* found_inf, bool large_args,
                    cudaStream_t stream, const char* name) {
  plan_updates<Op, T, S>(list, op, found_inf, large_args, [&](const auto& args, int64_t blocks) {
    constexpr int K = std::decay_t<decltype(args.batch)>::kCapacity;
    update_kernel<Op, T, S, K><<<dim3(unsigned(blocks)), dim3(kBlockThreads), 0, stream>>>(args);
    check_launch(name);
  });
}

template <typename T, int N>
void launch_probe(const DeviceTensorList<N>& list, int grad, const GradScaleSource& scale, long long* found,
                  bool large_args, cudaStream_t stream) {
  plan_probe<T>(list, grad, scale, found, large_args, [&](const auto& args, int64_t blocks) {
    constexpr int K = std::decay_t<decltype(args.batch)>::kCapacity;
    probe_kernel<T, K><<<dim3(unsigned(blocks)), dim3(kBlockThreads), 0, stream>>>(args);
    check_launch("nonfinite gradient pre-pass");
  });
}

}  // namespace fastopt::cuda
