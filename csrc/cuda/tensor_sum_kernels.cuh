// The CUDA launches of a rule with per-tensor sums (fastopt/tensor_sums.h: LAMB's trust ratio), with
// the CPU loops' order of additions (csrc/cpu/tensor_sum_loops.h), so that the sums, and with them
// every bit of the update, are the CPU's:
//
//   a chunk here is a CPU block: kChunkElements (1 << 16 on both sides) from the tensor's first element;
//   element i of a chunk goes to lane i % kSumLanes; a lane adds its terms in element order, in double;
//   a chunk's total is its lanes added in order; a tensor's sum, its chunks' totals added in order.
//
// A block owns one chunk. Its threads compute the terms of kSumPiece elements at a time into shared
// memory (one element each: the rule's gather, state written back), then kSumLanes threads per sum add
// the piece into their lanes (a lane's additions stay in element order), and so on to the chunk's end.
// Each chunk writes its own slot of a scratch array (no atomics), so the result does not depend on
// the scheduling. The passes, in stream order:
//
//   clip squares (only with max_grad_norm): per chunk, the sum of the unscaled gradients' squares
//   clip total   one thread: the chunks' sums in list order, sqrt, the clip ratio (norm / max_norm
//                when the norm exceeds max_norm, else 1), kept on the device
//   gather       per chunk: the rule's first pass (state updated), its S sums
//   factor       per tensor: its chunks' sums in order, then Rule::factor (lr * trust ratio)
//   finish       per chunk: the rule's second pass with its tensor's factor
//
// Nothing waits for the device: the clip ratio and the factors stay there. A device lr or step, a device
// loss scale and found_inf are read by the kernels as in the element-wise launches (prepare_block).
// The bodies are __host__ __device__ and take the thread index, so that tests/gpu/cuda_host runs them
// thread by thread on the host and compares the result with the CPU kernel bit for bit.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cuda/check.cuh"
#include "cuda/multi_tensor.cuh"
#include "fastopt/tensor_sums.h"

namespace fastopt::cuda {

// Elements whose terms a block computes between two additions into the lanes: one per thread.
constexpr int kSumPiece = kBlockThreads;
static_assert(kSumPiece % kSumLanes == 0, "a piece must keep every element in its lane");

// The passes (each a kernel on the GPU).
enum class SumPass { ClipSquares, Gather, Finish };

// The whole argument of a tensor-sum launch: the update's (batch, op, skip flag) and the scratch.
template <typename Op, int K>
struct SumArgs {
  UpdateArgs<Op, K> update;
  double* partial;     // S sums per chunk of the call (the chunk `first + block`), or the clip squares
  double* factors;     // per chunk of the call: at each tensor's first chunk, the tensor's factor
  double* clip;        // the call's clip ratio (one double), or nullptr without clipping
  int64_t first;       // the call's index of this launch's first chunk
};

// ---------------------------------------------------------------- one element

template <typename T, typename S, int N, unsigned USED, int K>
FASTOPT_HD void load_element(const TensorBatch<N, K>& batch, const ChunkSpan& span, int at, MathOf<T> (&e)[N]) {
  for_operands<N>([&](auto J) {
    constexpr int j = decltype(J)::value;
    using E = OperandType<T, S, j>;
    if constexpr ((USED >> j) & 1u) {
      e[j] = load_one<E, j == 1>(static_cast<const E*>(batch.ptrs[span.k][j]) + span.begin + at);
    } else {
      e[j] = MathOf<T>(0);
    }
  });
}

template <typename T, typename S, int N, unsigned WRITTEN, int K>
FASTOPT_HD void store_element(const TensorBatch<N, K>& batch, const ChunkSpan& span, int at,
                              const MathOf<T> (&e)[N]) {
  for_operands<N>([&](auto J) {
    constexpr int j = decltype(J)::value;
    using E = OperandType<T, S, j>;
    if constexpr ((WRITTEN >> j) & 1u) store_one<E>(static_cast<E*>(batch.ptrs[span.k][j]) + span.begin + at, e[j]);
  });
}

// The gradient a pass uses: unscaled, then divided by the clip ratio (the CPU loops' pass_grad; apex's
// FusedLAMB divides).
template <bool CLIP, typename M>
FASTOPT_HD M pass_gradient(M g, const GradUnscale<M>& unscale, M clip) {
  const M x = unscale(g);
  if constexpr (CLIP) {
    return x / clip;
  } else {
    return x;
  }
}

// The square of one unscaled gradient, in double (the clip pre-pass's term).
template <typename T, typename S, int N, int K>
FASTOPT_HD double grad_square(const TensorBatch<N, K>& batch, const ChunkSpan& span, int at,
                              const GradUnscale<MathOf<T>>& unscale) {
  const double x = double(unscale(load_one<T, true>(static_cast<const T*>(batch.ptrs[span.k][1]) + span.begin + at)));
  return x * x;
}

template <typename Rule, int V, bool CLIP, typename T, typename S, int K>
FASTOPT_HD void gather_element(const TensorBatch<Rule::kOperands, K>& batch, const ChunkSpan& span, int at,
                               const typename Rule::template Consts<MathOf<T>>& c,
                               const GradUnscale<MathOf<T>>& unscale, MathOf<T> clip,
                               double (&terms)[Rule::kTensorSums]) {
  constexpr int N = Rule::kOperands;
  constexpr unsigned used = Rule::first_used(V);
  MathOf<T> e[N];
  load_element<T, S, N, used>(batch, span, at, e);
  if constexpr ((used >> 1) & 1u) e[1] = pass_gradient<CLIP>(e[1], unscale, clip);
  Rule::template gather<V>(c, e, terms);
  store_element<T, S, N, Rule::first_written(V)>(batch, span, at, e);
}

template <typename Rule, int V, bool CLIP, typename T, typename S, int K>
FASTOPT_HD void finish_element(const TensorBatch<Rule::kOperands, K>& batch, const ChunkSpan& span, int at,
                               const typename Rule::template Consts<MathOf<T>>& c,
                               const GradUnscale<MathOf<T>>& unscale, MathOf<T> clip, MathOf<T> factor) {
  constexpr int N = Rule::kOperands;
  constexpr unsigned used = Rule::second_used(V);
  MathOf<T> e[N];
  load_element<T, S, N, used>(batch, span, at, e);
  if constexpr ((used >> 1) & 1u) e[1] = pass_gradient<CLIP>(e[1], unscale, clip);
  Rule::template finish<V>(c, factor, e);
  store_element<T, S, N, Rule::second_written(V)>(batch, span, at, e);
}

// ---------------------------------------------------------------- the order of additions

// Lane `lane`'s share of a piece of `count` terms (the piece starts at a multiple of kSumLanes within
// its chunk): terms lane, lane + kSumLanes, ... added in order, as the CPU's add_to_lanes does.
FASTOPT_HD void add_piece_to_lane(const double* terms, int count, int lane, double& sum) {
  for (int j = lane; j < count; j += kSumLanes) sum += terms[j];
}

// A chunk's total: its lanes in order (the CPU's lane_total).
FASTOPT_HD double lanes_total(const double* lanes) {
  double total = 0.0;
  for (int l = 0; l < kSumLanes; ++l) total += lanes[l];
  return total;
}

// The chunk of the call that a block of a launch owns, and its tensor's first chunk.
template <int N, int K>
FASTOPT_HD int64_t tensor_first_chunk(const TensorBatch<N, K>& batch, int64_t first, int k) {
  return first + int64_t(batch.chunk_start[k]);
}

// The clip ratio a block divides the gradients by (1 without clipping: never read then).
template <typename M>
FASTOPT_HD M clip_ratio(const double* clip) {
  return clip != nullptr ? M(*clip) : M(1);
}

// One thread: the clip ratio from every chunk's sum of squares, in list order (the CPU's global_clip).
FASTOPT_HD void clip_total(const double* squares, int64_t chunks, double max_norm, double* clip) {
  double sum = 0.0;
  for (int64_t c = 0; c < chunks; ++c) sum += squares[c];
  *clip = global_clip_ratio(sum, max_norm);
}

// Tensor k of a launch: its chunks' sums in order, then the rule's factor, stored at its first chunk.
template <typename Rule, typename Op, int K>
FASTOPT_HD void tensor_factor(const SumArgs<Op, K>& a, int k) {
  constexpr int NS = Rule::kTensorSums;
  const auto& batch = a.update.batch;
  double sums[NS] = {};
  for (int32_t c = batch.chunk_start[k]; c < batch.chunk_start[k + 1]; ++c) {
    for (int s = 0; s < NS; ++s) sums[s] += a.partial[(a.first + c) * NS + s];
  }
  const Op& op = a.update.op;
  const typename Rule::Hyper h = op.on_device() ? op.device.with_lr_step(op.hyper) : op.hyper;
  a.factors[tensor_first_chunk(batch, a.first, k)] = Rule::factor(h, sums);
}

// Whether a tensor-sum launch does anything: the skip flags (skip_nonfinite's, a device found_inf).
template <typename Op, int K>
FASTOPT_HD bool sums_run(const SumArgs<Op, K>& a) {
  if (a.update.found_inf != nullptr && *a.update.found_inf != 0) return false;
  return !a.update.op.skipped();
}

// ---------------------------------------------------------------- kernels

// The clip squares (S = 1) or the rule's first pass, one chunk per block; see the top of the file.
template <SumPass PASS, typename Rule, int V, bool CLIP, typename Op, typename T, typename S, int K>
__global__ void __launch_bounds__(kBlockThreads) sum_kernel(const __grid_constant__ SumArgs<Op, K> a) {
  using M = MathOf<T>;
  constexpr int NS = PASS == SumPass::ClipSquares ? 1 : Rule::kTensorSums;
  static_assert(NS * kSumLanes <= kBlockThreads, "one thread per lane");
  __shared__ typename Op::Consts consts;
  __shared__ GradUnscale<M> unscale;
  __shared__ bool run;
  __shared__ double terms[NS][kSumPiece];
  __shared__ double lanes[NS][kSumLanes];
  const int tid = int(threadIdx.x);
  if (tid == 0) run = prepare_block(a.update, consts, unscale);
  __syncthreads();
  if (!run) return;
  const ChunkSpan span = chunk_of(a.update.batch, int64_t(blockIdx.x));
  const M clip = clip_ratio<M>(a.clip);
  double lane_sum = 0.0;
  for (int base = 0; base < span.n; base += kSumPiece) {
    const int count = min(kSumPiece, span.n - base);
    if (tid < count) {
      if constexpr (PASS == SumPass::ClipSquares) {
        terms[0][tid] = grad_square<T, S>(a.update.batch, span, base + tid, unscale);
      } else {
        double t[NS];
        gather_element<Rule, V, CLIP, T, S>(a.update.batch, span, base + tid, consts, unscale, clip, t);
        for (int s = 0; s < NS; ++s) terms[s][tid] = t[s];
      }
    }
    __syncthreads();
    if (tid < NS * kSumLanes) add_piece_to_lane(terms[tid / kSumLanes], count, tid % kSumLanes, lane_sum);
    __syncthreads();
  }
  if (tid < NS * kSumLanes) lanes[tid / kSumLanes][tid % kSumLanes] = lane_sum;
  __syncthreads();
  if (tid < NS) a.partial[(a.first + int64_t(blockIdx.x)) * NS + tid] = lanes_total(lanes[tid]);
}

template <typename Rule, typename Op, int K>
__global__ void __launch_bounds__(kBlockThreads) factor_kernel(const __grid_constant__ SumArgs<Op, K> a) {
  const int k = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (k >= a.update.batch.count || !sums_run(a)) return;
  tensor_factor<Rule>(a, k);
}

// (static: this header is in several translation units, and the kernel is not a template)
static __global__ void clip_kernel(const double* squares, int64_t chunks, double max_norm, const long long* found_inf,
                            double* clip) {
  if (found_inf != nullptr && *found_inf != 0) return;
  clip_total(squares, chunks, max_norm, clip);
}

template <typename Rule, int V, bool CLIP, typename Op, typename T, typename S, int K>
__global__ void __launch_bounds__(kBlockThreads, blocks_per_sm<MathOf<T>>())
    finish_kernel(const __grid_constant__ SumArgs<Op, K> a) {
  using M = MathOf<T>;
  __shared__ typename Op::Consts consts;
  __shared__ GradUnscale<M> unscale;
  __shared__ bool run;
  if (threadIdx.x == 0) run = prepare_block(a.update, consts, unscale);
  __syncthreads();
  if (!run) return;
  const ChunkSpan span = chunk_of(a.update.batch, int64_t(blockIdx.x));
  const M factor = M(a.factors[tensor_first_chunk(a.update.batch, a.first, span.k)]);
  const M clip = clip_ratio<M>(a.clip);
  for (int at = int(threadIdx.x); at < span.n; at += int(blockDim.x)) {
    finish_element<Rule, V, CLIP, T, S>(a.update.batch, span, at, consts, unscale, clip, factor);
  }
}

// ---------------------------------------------------------------- the passes of one call

// Every launch of the passes for one list, in order, through the runner (the GPU launchers below, or
// the host simulation): runner.sums<PASS, Rule, V, CLIP, T, S>(args, blocks), runner.factors<Rule>(args),
// runner.clip(squares, chunks, max_norm, found_inf, clip), and Runner::Scratch(runner, doubles).
template <typename Rule, int V, typename Op, typename T, typename S, typename Runner, int N>
void run_tensor_sums(Runner& runner, const DeviceTensorList<N>& list, const Op& op, const long long* found_inf,
                     double max_norm) {
  constexpr int NS = Rule::kTensorSums;
  int64_t chunks = 0;
  for (int64_t n : list.sizes) chunks += n > 0 ? chunk_count(n) : 0;
  const bool clipping = max_norm > 0.0;
  // partial: NS per chunk; factors: one per chunk; squares: one per chunk; the clip ratio
  typename Runner::Scratch scratch(runner, chunks * (NS + 2) + 1);
  double* partial = scratch.get();
  double* factors = partial + chunks * NS;
  double* squares = factors + chunks;
  double* clip = clipping ? squares + chunks : nullptr;

  // Plans the list's launches again for each pass (a host loop over the sizes): `each(args, blocks)`.
  auto for_each_launch = [&](auto&& each) {
    int64_t first = 0;
    plan_updates<Op, T, S>(list, op, found_inf, runner.large_args(), [&](const auto& update, int64_t blocks) {
      constexpr int K = std::decay_t<decltype(update.batch)>::kCapacity;
      static_assert(sizeof(SumArgs<Op, K>) - sizeof(TensorBatch<N, K>) <= kArgReserve,
                    "tensor-sum kernel arguments over the argument space");
      SumArgs<Op, K> a;
      a.update = update;
      a.partial = partial;
      a.factors = factors;
      a.clip = clip;
      a.first = first;
      each(static_cast<const decltype(a)&>(a), blocks);
      first += blocks;
    });
  };
  auto passes = [&](auto CLIP) {
    if constexpr (decltype(CLIP)::value) {
      for_each_launch([&](const auto& a, int64_t blocks) {
        auto squares_args = a;
        squares_args.partial = squares;
        runner.template sums<SumPass::ClipSquares, Rule, V, true, T, S>(squares_args, blocks);
      });
      runner.clip(squares, chunks, max_norm, found_inf, clip);
    }
    for_each_launch([&](const auto& a, int64_t blocks) {
      runner.template sums<SumPass::Gather, Rule, V, decltype(CLIP)::value, T, S>(a, blocks);
    });
    for_each_launch([&](const auto& a, int64_t) { runner.template factors<Rule>(a); });
    for_each_launch([&](const auto& a, int64_t blocks) {
      runner.template sums<SumPass::Finish, Rule, V, decltype(CLIP)::value, T, S>(a, blocks);
    });
  };
  if (clipping) {
    passes(std::true_type{});
  } else {
    passes(std::false_type{});
  }
}

// ---------------------------------------------------------------- GPU launchers

template <SumPass PASS, typename Rule, int V, bool CLIP, typename T, typename S, typename Args>
void launch_sums(const Args& a, int64_t blocks, cudaStream_t stream, const char* name) {
  using Op = std::decay_t<decltype(a.update.op)>;
  constexpr int K = std::decay_t<decltype(a.update.batch)>::kCapacity;
  if constexpr (PASS == SumPass::Finish) {
    finish_kernel<Rule, V, CLIP, Op, T, S, K><<<dim3(unsigned(blocks)), dim3(kBlockThreads), 0, stream>>>(a);
  } else {
    sum_kernel<PASS, Rule, V, CLIP, Op, T, S, K><<<dim3(unsigned(blocks)), dim3(kBlockThreads), 0, stream>>>(a);
  }
  check_launch(name);
}

template <typename Rule, typename Args>
void launch_factors(const Args& a, cudaStream_t stream, const char* name) {
  using Op = std::decay_t<decltype(a.update.op)>;
  constexpr int K = std::decay_t<decltype(a.update.batch)>::kCapacity;
  constexpr int threads = 128;
  const unsigned blocks = unsigned((a.update.batch.count + threads - 1) / threads);
  factor_kernel<Rule, Op, K><<<dim3(blocks), dim3(threads), 0, stream>>>(a);
  check_launch(name);
}

inline void launch_clip(const double* squares, int64_t chunks, double max_norm, const long long* found_inf,
                        double* clip, cudaStream_t stream, const char* name) {
  clip_kernel<<<1, 1, 0, stream>>>(squares, chunks, max_norm, found_inf, clip);
  check_launch(name);
}

}  // namespace fastopt::cuda
