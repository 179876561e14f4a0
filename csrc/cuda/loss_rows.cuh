// Row reductions of the GPU losses: the running softmax summaries and hinge partials, the fixed
// reduction trees, and the thread groups (part of a warp, a warp, a block) that handle one row
// (see loss_common.cuh for the overview).
#pragma once

#include "cuda/loss_common.cuh"

namespace fastopt::cuda {

namespace {

// ---------------------------------------------------------------- values combined by the trees

// A thread's or a group's running softmax summary: max and sum of exp(z - max) over its elements.
template <typename M>
struct Stats {
  M max;
  M sum;
};

// Hinge row partials: the summed margin violations and how many there were.
template <typename M>
struct HingeAcc {
  M loss;
  long long count;
};

template <typename V>
__device__ __forceinline__ V shfl_down(V v, int offset, int width) {
  return __shfl_down_sync(kFullMask, v, offset, width);
}
template <typename M>
__device__ __forceinline__ Stats<M> shfl_down(Stats<M> v, int offset, int width) {
  return {shfl_down(v.max, offset, width), shfl_down(v.sum, offset, width)};
}
template <typename M>
__device__ __forceinline__ HingeAcc<M> shfl_down(HingeAcc<M> v, int offset, int width) {
  return {shfl_down(v.loss, offset, width), shfl_down(v.count, offset, width)};
}

template <typename V>
__device__ __forceinline__ V shfl_from(V v, int lane, int width) {
  return __shfl_sync(kFullMask, v, lane, width);
}
template <typename M>
__device__ __forceinline__ Stats<M> shfl_from(Stats<M> v, int lane, int width) {
  return {shfl_from(v.max, lane, width), shfl_from(v.sum, lane, width)};
}
template <typename M>
__device__ __forceinline__ HingeAcc<M> shfl_from(HingeAcc<M> v, int lane, int width) {
  return {shfl_from(v.loss, lane, width), shfl_from(v.count, lane, width)};
}

struct Add {
  template <typename V>
  __device__ __forceinline__ V operator()(V a, V b) const {
    return a + b;
  }
};

struct AddHinge {
  template <typename M>
  __device__ __forceinline__ HingeAcc<M> operator()(HingeAcc<M> a, HingeAcc<M> b) const {
    return {a.loss + b.loss, a.count + b.count};
  }
};

// Two softmax summaries as one: both sums rescaled to the larger max. The identity is {-inf, 0}
// (exp_(0) is exactly 1, so combining with it changes no bit). While the max is -inf (everything
// masked) the sum stays 0: exp(-inf - -inf) would be NaN.
struct CombineStats {
  template <typename M>
  __device__ __forceinline__ Stats<M> operator()(Stats<M> a, Stats<M> b) const {
    const M m = b.max > a.max ? b.max : a.max;
    if (m == M(-INFINITY)) return {m, M(0)};
    return {m, a.sum * exp_(a.max - m) + b.sum * exp_(b.max - m)};
  }
};

// Folds kUnroll new elements into a thread's summary: their max first (NaN never becomes the max,
// as on the CPU), one rescale when it grows, then one exp per element. Padding elements are -inf and
// add exp(-inf) = 0.
template <typename M>
__device__ __forceinline__ void accumulate(Stats<M>& st, const M (&v)[kUnroll]) {
  M chunk_max = M(-INFINITY);
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) chunk_max = v[k] > chunk_max ? v[k] : chunk_max;
  if (chunk_max > st.max) {
    st.sum = st.sum * exp_(st.max - chunk_max);  // 0 * 0 while the max was -inf
    st.max = chunk_max;
  }
  if (st.max == M(-INFINITY)) return;  // all masked so far
#pragma unroll
  for (int k = 0; k < kUnroll; ++k) st.sum = st.sum + exp_(v[k] - st.max);
}

// ---------------------------------------------------------------- thread groups

// Lane 0 of each aligned group of W lanes gets op over the group, in a fixed tree (offsets W/2 .. 1);
// the other lanes hold partial results.
template <int W, typename V, typename Op>
__device__ __forceinline__ V warp_tree(V v, Op op) {
#pragma unroll
  for (int offset = W / 2; offset > 0; offset /= 2) v = op(v, shfl_down(v, offset, W));
  return v;
}

// G consecutive lanes of a warp per row, kThreads / G rows per block. reduce() is the fixed tree,
// broadcast from the group's lane 0, followed by __syncwarp (a memory barrier for the warp). Every
// lane of the warp must call it, the same number of times: the row loops are uniform, rows past the
// end run with no elements.
template <int G>
struct WarpRows {
  static_assert(G >= 2 && G <= 32 && (G & (G - 1)) == 0, "a power of two up to a warp");
  static constexpr int kThreads = 256;
  static constexpr int kRowsPerBlock = kThreads / G;
  __device__ static int lane() { return int(threadIdx.x) % G; }
  __device__ static int size() { return G; }
  __device__ static int row_in_block() { return int(threadIdx.x) / G; }
  template <typename V, typename Op>
  __device__ static V reduce(V v, Op op, V /*identity*/) {
    v = shfl_from(warp_tree<G>(v, op), 0, G);
    __syncwarp();
    return v;
  }
};

// A whole block (a multiple of 32 threads, at most kThreads) per row. reduce(): each warp's tree,
// the warp results through shared memory, warp 0's tree over them (identity beyond the last warp),
// the result through shared memory. Two __syncthreads: after the call every thread of the block has
// passed a barrier, and consecutive calls never overwrite a value still to be read.
struct BlockRows {
  static constexpr int kThreads = 512;
  static constexpr int kRowsPerBlock = 1;
  __device__ static int lane() { return int(threadIdx.x); }
  __device__ static int size() { return int(blockDim.x); }
  __device__ static int row_in_block() { return 0; }
  template <typename V, typename Op>
  __device__ static V reduce(V v, Op op, V identity) {
    __shared__ V warp_results[32];
    __shared__ V result;
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    v = warp_tree<32>(v, op);
    if (lane == 0) warp_results[warp] = v;
    __syncthreads();
    if (warp == 0) {
      const int warps = int(blockDim.x) >> 5;
      V w = lane < warps ? warp_results[lane] : identity;
      w = warp_tree<32>(w, op);
      if (lane == 0) result = w;
    }
    __syncthreads();
    return result;
  }
};

// Sum in double of value(k) for k in [begin, end) by the whole block: thread t adds k = begin + t,
// begin + t + blockDim.x, ... in order, then BlockRows' tree. Every thread gets the total.
template <typename F>
__device__ double block_sum(int64_t begin, int64_t end, F value) {
  double acc = 0.0;
  for (int64_t k = begin + int64_t(threadIdx.x); k < end; k += int64_t(blockDim.x)) acc = acc + value(k);
  return BlockRows::reduce(acc, Add{}, 0.0);
}

// The (max, log_sum) of z[0..len) for the calling group (len = 0 gives {-inf, -inf}, unused).
template <class G, typename T>
__device__ SoftmaxRow<T> row_stats(const T* z, int64_t len) {
  Stats<T> st{T(-INFINITY), T(0)};
  const int lane = G::lane();
  const int64_t size = G::size();
  for (int64_t base = 0; base < len; base += size * kUnroll) {
    T v[kUnroll];
#pragma unroll
    for (int k = 0; k < kUnroll; ++k) {
      const int64_t j = base + k * size + lane;
      v[k] = j < len ? z[j] : T(-INFINITY);
    }
    accumulate(st, v);
  }
  st = G::reduce(st, CombineStats{}, Stats<T>{T(-INFINITY), T(0)});
  return {st.max, log_(st.sum)};
}

// Calls fn(group) with the group type for rows of c elements, and the block size it needs.
struct RowLaunch {
  int threads;
  int64_t rows_per_block;
};

template <typename Fn>
void with_row_group(int64_t c, Fn&& fn) {
  if (c <= 32) {
    fn(WarpRows<8>{}, RowLaunch{WarpRows<8>::kThreads, WarpRows<8>::kRowsPerBlock});
  } else if (c <= 1024) {
    fn(WarpRows<32>{}, RowLaunch{WarpRows<32>::kThreads, WarpRows<32>::kRowsPerBlock});
  } else {
    const int threads = c <= 4096 ? 128 : (c <= 16384 ? 256 : BlockRows::kThreads);
    fn(BlockRows{}, RowLaunch{threads, 1});
  }
}

unsigned row_blocks(int64_t rows, const RowLaunch& launch) {
  const int64_t blocks = ceil_div(rows, launch.rows_per_block);
  return unsigned(blocks < kMaxRowBlocks ? blocks : kMaxRowBlocks);
}


}  // namespace

}  // namespace fastopt::cuda
