// The losses of backend.h on the GPU: softmax cross-entropy (torch semantics), softmax/log_softmax,
// the multiclass SVM (hinge) loss, the L1/L2 penalty and the label check. The math of every element
// and every row is the shared headers' (fastopt/softmax.h, cross_entropy.h, hinge.h); this file only
// arranges threads, memory and reductions around it.
//
// Rows. A row of C scores is handled by a group of threads: G = 8 lanes of a warp (C <= 32; 32 rows
// per 256-thread block), a whole warp (C <= 1024; 8 rows per block) or a whole block of 128, 256 or
// 512 threads (C <= 4096, <= 16384, larger). Lane l of a group of size S takes the elements
// j = base + k*S + l (k < kUnroll, base a multiple of kUnroll*S): coalesced loads, kUnroll of them in
// flight per thread, and every element is read and written by the same thread in every pass.
//   pass 1: each thread keeps an online (max, sum of exp(z - max)) over its elements, rescaling its
//           sum once per kUnroll elements when the max grows; the group combines the pairs in a fixed
//           tree (shuffles within a warp; warp results through shared memory for a block).
//   pass 2: reads the row again (from L2 for the large rows: a row of 50257 floats is 200 KB) and
//           writes the gradient / probabilities. No N x C buffer besides the output.
// One row per group with a grid-stride loop over rows: a row never depends on the grid size, and
// the group and block sizes depend on C alone, so the same input gives the same bits on any GPU.
//
// Reductions. Per-row losses go to a buffer of doubles (the CPU sums them in double too); a single
// block then adds them: thread t sums elements t, t + 512, ... in order, then a fixed tree. Above
// kSumChunk values, fixed chunks of kSumChunk are summed by one block each first and the single
// block adds the chunk sums. No floating-point atomics anywhere; find_bad_label uses an integer
// atomicMax, whose result does not depend on the order.
//
// Cross-entropy runs in up to five stream-ordered launches: [chunk sums for the denominator / W] ->
// [scalars] -> rows -> [chunk sums of the row losses] -> [final sum]. The bracketed ones run only when
// needed: the scalars kernel sums the "mean" denominator (the weights w_y of counted rows) and, with
// weights and smoothing, W = sum of the class weights, then calls cross_entropy_scalars on the
// device, so the row kernel knows scale = 1 / denominator before it writes any gradient. Otherwise
// the host computes the scalars and passes them by value. All scratch memory is one stream-ordered
// allocation (cudaMallocAsync / cudaFreeAsync on queue.stream), so these launches can be captured in a
// CUDA graph; the label check that the bindings run first (find_bad_label) waits for the stream and
// refuses inside a capture.
//
// In place (dlogits == logits, or dscores == scores): every element is read before it is written, by
// the thread that writes it. The cross-entropy needs the label's own score z_y only in the loss,
// which the thread owning element y computes from its own pass-2 read (no other thread writes y).
// The hinge needs s_y in every thread: each reads it first, and d_y is written by lane 0 only after
// the group's reduction, which is a barrier (__syncthreads / __syncwarp).
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "cuda/check.cuh"
#include "fastopt/fastopt.h"

namespace fastopt::cuda {

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kUnroll = 4;                  // elements per thread per step of a row loop
constexpr int kSumThreads = 512;            // the single-block reductions and the chunk sums
constexpr int64_t kSumChunk = 16384;        // values summed by one block before the final sum
constexpr int64_t kMaxRowBlocks = 1 << 20;  // grid cap of the row kernels (a grid-stride loop beyond)
constexpr int kLabelThreads = 256;
constexpr int64_t kMaxLabelBlocks = 4096;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A grid dimension: at most 2^31 - 1 blocks.
unsigned grid_size(int64_t blocks, const char* what) {
  if (blocks < 1 || blocks > int64_t(INT_MAX)) {
    throw Error(std::string("fastopt: ") + what + " needs " + std::to_string(blocks) +
                " blocks, more than a CUDA grid holds");
  }
  return unsigned(blocks);
}

// ---------------------------------------------------------------- stream-ordered scratch

// One device allocation on the stream, carved into 256-byte aligned pieces; freed on the same stream
// when the call returns (or throws), after the kernels queued before the free.
class Scratch {
 public:
  // Reserves `count` objects of type V and returns their offset, or -1 for count == 0.
  template <typename V>
  int64_t reserve(int64_t count) {
    if (count <= 0) return -1;
    const int64_t offset = bytes_;
    bytes_ += (count * int64_t(sizeof(V)) + 255) / 256 * 256;
    return offset;
  }

  void allocate(cudaStream_t stream) {
    stream_ = stream;
    if (bytes_ == 0) return;
    check(cudaMallocAsync(&base_, size_t(bytes_), stream), "cudaMallocAsync (loss scratch)");
  }

  template <typename V>
  V* at(int64_t offset) const {
    return offset < 0 ? nullptr : reinterpret_cast<V*>(static_cast<char*>(base_) + offset);
  }

  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() {
    // Errors here would be the launch's or the stream's, already reported; clear them, never throw.
    if (base_ && cudaFreeAsync(base_, stream_) != cudaSuccess) cudaGetLastError();
  }

 private:
  void* base_ = nullptr;
  int64_t bytes_ = 0;
  cudaStream_t stream_ = nullptr;
};

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

// ---------------------------------------------------------------- sums of doubles

// parts[b] = sum of x[b*kSumChunk .. min(n, (b+1)*kSumChunk)).
__global__ void __launch_bounds__(kSumThreads) sum_chunks(const double* x, int64_t n, double* parts) {
  const int64_t begin = int64_t(blockIdx.x) * kSumChunk;
  const int64_t end = begin + kSumChunk < n ? begin + kSumChunk : n;
  const double total = block_sum(begin, end, [x](int64_t k) { return x[k]; });
  if (threadIdx.x == 0) parts[blockIdx.x] = total;
}

// *out = T(sum(x[0..count)) / divisor), divisor read on the device when divisor_dev is set. One block.
template <typename T>
__global__ void __launch_bounds__(kSumThreads)
    finish_sum(const double* x, int64_t count, const double* divisor_dev, double divisor, T* out) {
  const double total = block_sum(0, count, [x](int64_t k) { return x[k]; });
  if (threadIdx.x == 0) *out = T(total / (divisor_dev ? *divisor_dev : divisor));
}

// Sums n per-row values (double) into the 0-d `out`: directly when they fit one chunk, else the
// chunk sums first (into `parts`, ceil(n / kSumChunk) doubles) and then those.
template <typename T>
void launch_total(const double* rows, int64_t n, double* parts, const double* divisor_dev, double divisor,
                  T* out, cudaStream_t stream) {
  const double* x = rows;
  int64_t count = n;
  if (n > kSumChunk) {
    const int64_t blocks = ceil_div(n, kSumChunk);
    sum_chunks<<<grid_size(blocks, "sum_chunks"), kSumThreads, 0, stream>>>(rows, n, parts);
    check_launch("sum_chunks");
    x = parts;
    count = blocks;
  }
  finish_sum<T><<<1, kSumThreads, 0, stream>>>(x, count, divisor_dev, divisor, out);
  check_launch("finish_sum");
}

int64_t total_parts(int64_t n) { return n > kSumChunk ? ceil_div(n, kSumChunk) : 0; }

// ---------------------------------------------------------------- cross-entropy

template <typename T>
struct CeParams {
  CrossEntropyScalars<T> s;
  double denominator;  // "mean": sum of w_y over counted rows
};

template <typename T, typename L>
struct CePrepArgs {
  const L* labels;
  const T* weight;  // or nullptr
  int64_t n, c, ignore_index;
  double label_smoothing, z_loss;
  bool mean;             // sum the denominator
  bool sum_weights;      // sum W (weights and smoothing); else W = c
  int64_t row_parts;     // chunk sums of the denominator in `parts` (0: summed directly)
  int64_t class_parts;   // chunk sums of W after them (0: summed directly)
};

// Labels. The bindings check every label first (find_bad_label), but other work on the device may change
// one before a kernel reads it: a label outside [0, c) is never used as an index. Its row counts nothing,
// gets a zero gradient and a NaN loss (as on the CPU), so that the result shows it.
__device__ __forceinline__ bool label_in_range(int64_t y, int64_t c) { return y >= 0 && y < c; }

// Row i's share of the "mean" denominator: w_y (1 without weights), 0 when ignored or out of range.
template <typename T, typename L>
__device__ __forceinline__ double counted_weight(const CePrepArgs<T, L>& a, int64_t i) {
  const int64_t y = int64_t(a.labels[i]);
  if (y == a.ignore_index || !label_in_range(y, a.c)) return 0.0;
  return a.weight ? double(a.weight[y]) : 1.0;
}

// Blocks [0, row_parts): chunks of rows for the denominator; then class_parts chunks of classes for W.
template <typename T, typename L>
__global__ void __launch_bounds__(kSumThreads) cross_entropy_prep_chunks(CePrepArgs<T, L> a, double* parts) {
  const int64_t b = blockIdx.x;
  double total;
  if (b < a.row_parts) {
    const int64_t begin = b * kSumChunk, end = begin + kSumChunk < a.n ? begin + kSumChunk : a.n;
    total = block_sum(begin, end, [&a](int64_t i) { return counted_weight(a, i); });
  } else {
    const int64_t begin = (b - a.row_parts) * kSumChunk;
    const int64_t end = begin + kSumChunk < a.c ? begin + kSumChunk : a.c;
    total = block_sum(begin, end, [&a](int64_t j) { return double(a.weight[j]); });
  }
  if (threadIdx.x == 0) parts[b] = total;
}

// One block: the denominator and W (from the chunk sums, or directly when they fit one chunk), then
// the scalars, computed on the device by the same function as on the CPU.
template <typename T, typename L>
__global__ void __launch_bounds__(kSumThreads)
    cross_entropy_prep(CePrepArgs<T, L> a, const double* parts, CeParams<T>* out) {
  double denominator = 0.0;
  if (a.mean) {
    denominator = a.row_parts > 0 ? block_sum(0, a.row_parts, [parts](int64_t k) { return parts[k]; })
                                  : block_sum(0, a.n, [&a](int64_t i) { return counted_weight(a, i); });
  }
  double weight_sum = double(a.c);
  if (a.sum_weights) {
    weight_sum = a.class_parts > 0
                     ? block_sum(a.row_parts, a.row_parts + a.class_parts, [parts](int64_t k) { return parts[k]; })
                     : block_sum(0, a.c, [&a](int64_t j) { return double(a.weight[j]); });
  }
  if (threadIdx.x == 0) {
    out->s = cross_entropy_scalars<T>(a.label_smoothing, a.z_loss, weight_sum, a.c,
                                      a.mean ? 1.0 / denominator : 1.0);
    out->denominator = denominator;
  }
}

template <typename T, typename L>
struct CeRowsArgs {
  const T* logits;
  const L* labels;
  const T* weight;   // or nullptr
  T* dlogits;        // may be logits
  T* row_losses;     // reduction None
  double* rows;      // reduction Mean / Sum
  int64_t n, c, ignore_index;
  CrossEntropyScalars<T> scalars;  // used when params is nullptr
  const CeParams<T>* params;       // computed on the device by cross_entropy_prep
};

// One row per group: pass 1 the row's (max, log_sum); pass 2 the gradient (zeros for an ignored row)
// and, with smoothing, sum_j w_j (lse - z_j), reduced over the group; then the row's loss, written by
// the thread that read z_y. The sequence of reductions is the same for every row (it depends only on
// the call's smoothing flag), so all lanes of a warp / block meet at every shuffle and barrier.
template <class G, typename T, typename L>
__global__ void __launch_bounds__(G::kThreads) cross_entropy_rows(CeRowsArgs<T, L> a) {
  const CrossEntropyScalars<T> s = a.params ? a.params->s : a.scalars;
  const bool weighted_smoothing = s.smoothing && a.weight != nullptr;
  const int lane = G::lane();
  const int64_t size = G::size();
  for (int64_t first = int64_t(blockIdx.x) * G::kRowsPerBlock; first < a.n;
       first += int64_t(gridDim.x) * G::kRowsPerBlock) {
    const int64_t i = first + G::row_in_block();
    const bool active = i < a.n;
    const int64_t label = active ? int64_t(a.labels[i]) : a.ignore_index;
    const bool broken = active && label != a.ignore_index && !label_in_range(label, a.c);
    const bool counted = active && label != a.ignore_index && !broken;
    const int64_t y = counted ? label : -1;  // (-1: no element is the label's)
    const int64_t len = active ? a.c : 0;
    const T* z = a.logits + (active ? i : 0) * a.c;
    T* out = a.dlogits + (active ? i : 0) * a.c;

    const SoftmaxRow<T> r = row_stats<G>(z, counted ? len : 0);
    const T w_label = counted && a.weight ? a.weight[y] : T(1);
    const T coef = cross_entropy_prob_coef(r, w_label, s);
    T smooth = T(0);   // this thread's part of sum_j w_j (lse - z_j)
    T z_label = T(0);  // read by the thread owning element y
    for (int64_t base = 0; base < len; base += size * kUnroll) {
      T v[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t j = base + k * size + lane;
        v[k] = counted && j < len ? z[j] : T(0);
      }
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t j = base + k * size + lane;
        if (j >= len) continue;
        T g = T(0);
        if (counted) {
          const T w_j = weighted_smoothing ? a.weight[j] : T(1);
          g = cross_entropy_grad(v[k], r, coef, j == y, w_label, w_j, s);
          if (s.smoothing) smooth = smooth + w_j * row_neg_log_prob(v[k], r);
          if (j == y) z_label = v[k];
        }
        out[j] = g;
      }
    }
    if (s.smoothing) smooth = G::reduce(smooth, Add{}, T(0));
    const int owner = counted ? int(y % size) : 0;
    if (active && lane == owner) {
      const T loss = counted ? cross_entropy_row_loss(r, z_label, w_label, smooth, s) : (broken ? T(NAN) : T(0));
      if (a.row_losses) {
        a.row_losses[i] = loss;
      } else {
        a.rows[i] = double(loss);
      }
    }
  }
}

template <typename T, typename L>
void cross_entropy_typed(const CrossEntropyCall& call, cudaStream_t stream) {
  const bool mean = call.reduction == Reduction::Mean;
  const bool reduce = call.reduction != Reduction::None;
  const bool smoothing = call.label_smoothing > 0.0;
  const bool sum_weights = smoothing && call.weight != nullptr;
  const bool device_scalars = mean || sum_weights;
  T* loss = static_cast<T*>(call.loss);
  const int64_t n = call.n, c = call.c;

  if (n == 0) {  // "mean" over no rows: 0 / 0 = NaN, as on the CPU; "sum": 0
    if (reduce) {
      finish_sum<T><<<1, kSumThreads, 0, stream>>>(nullptr, 0, nullptr, mean ? 0.0 : 1.0, loss);
      check_launch("finish_sum");
    }
    return;
  }

  CePrepArgs<T, L> prep{static_cast<const L*>(call.labels),
                        static_cast<const T*>(call.weight),
                        n,
                        c,
                        call.ignore_index,
                        call.label_smoothing,
                        call.z_loss,
                        mean,
                        sum_weights,
                        0,
                        0};
  // Chunk sums first only when a sum spans several chunks (then both sums use chunks).
  if ((mean && n > kSumChunk) || (sum_weights && c > kSumChunk)) {
    prep.row_parts = mean ? ceil_div(n, kSumChunk) : 0;
    prep.class_parts = sum_weights ? ceil_div(c, kSumChunk) : 0;
  }

  Scratch scratch;
  const int64_t params_at = scratch.reserve<CeParams<T>>(device_scalars ? 1 : 0);
  const int64_t prep_parts_at = scratch.reserve<double>(prep.row_parts + prep.class_parts);
  const int64_t rows_at = scratch.reserve<double>(reduce ? n : 0);
  const int64_t loss_parts_at = scratch.reserve<double>(reduce ? total_parts(n) : 0);
  scratch.allocate(stream);
  CeParams<T>* params = scratch.at<CeParams<T>>(params_at);

  if (device_scalars) {
    double* parts = scratch.at<double>(prep_parts_at);
    if (parts) {
      cross_entropy_prep_chunks<T, L>
          <<<grid_size(prep.row_parts + prep.class_parts, "cross_entropy_prep_chunks"), kSumThreads, 0, stream>>>(
              prep, parts);
      check_launch("cross_entropy_prep_chunks");
    }
    cross_entropy_prep<T, L><<<1, kSumThreads, 0, stream>>>(prep, parts, params);
    check_launch("cross_entropy_prep");
  }

  CeRowsArgs<T, L> args{static_cast<const T*>(call.logits),
                        static_cast<const L*>(call.labels),
                        static_cast<const T*>(call.weight),
                        static_cast<T*>(call.dlogits),
                        reduce ? nullptr : static_cast<T*>(call.row_losses),
                        scratch.at<double>(rows_at),
                        n,
                        c,
                        call.ignore_index,
                        // W = C without weights; with weights but no smoothing W is unused.
                        cross_entropy_scalars<T>(call.label_smoothing, call.z_loss, double(c), c, 1.0),
                        params};
  with_row_group(c, [&](auto group, RowLaunch launch) {
    using G = decltype(group);
    cross_entropy_rows<G, T, L><<<row_blocks(n, launch), launch.threads, 0, stream>>>(args);
    check_launch("cross_entropy_rows");
  });

  if (reduce) {
    launch_total<T>(scratch.at<double>(rows_at), n, scratch.at<double>(loss_parts_at),
                    mean ? &params->denominator : nullptr, 1.0, loss, stream);
  }
}

// ---------------------------------------------------------------- softmax / log_softmax

template <class G, typename T>
__global__ void __launch_bounds__(G::kThreads) softmax_rows(const T* x, T* out, int64_t rows, int64_t c, bool log) {
  const int lane = G::lane();
  const int64_t size = G::size();
  for (int64_t first = int64_t(blockIdx.x) * G::kRowsPerBlock; first < rows;
       first += int64_t(gridDim.x) * G::kRowsPerBlock) {
    const int64_t i = first + G::row_in_block();
    const bool active = i < rows;
    const int64_t len = active ? c : 0;
    const T* z = x + (active ? i : 0) * c;
    T* o = out + (active ? i : 0) * c;
    const SoftmaxRow<T> r = row_stats<G>(z, len);
    for (int64_t base = 0; base < len; base += size * kUnroll) {
      T v[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t j = base + k * size + lane;
        v[k] = j < len ? z[j] : T(0);
      }
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t j = base + k * size + lane;
        if (j < len) o[j] = log ? row_log_prob(v[k], r) : row_prob(v[k], r);
      }
    }
  }
}

// ---------------------------------------------------------------- multiclass SVM (hinge)

template <typename T, typename L>
struct HingeRowsArgs {
  const T* scores;
  const L* labels;
  T* dscores;      // may be scores
  T* row_losses;   // reduction None
  double* rows;    // reduction Mean / Sum
  int64_t n, c;
  T margin;
  T scale;         // 1 / n for "mean", else 1 (as on the CPU)
};

// d_j = scale for a violated margin (j != y), else 0; d_y = 0 - violations * scale, written by lane 0
// after the group's reduction (a barrier), so every thread has read s_y before it changes in place.
template <class G, typename T, typename L>
__global__ void __launch_bounds__(G::kThreads) hinge_rows(HingeRowsArgs<T, L> a) {
  const int lane = G::lane();
  const int64_t size = G::size();
  for (int64_t first = int64_t(blockIdx.x) * G::kRowsPerBlock; first < a.n;
       first += int64_t(gridDim.x) * G::kRowsPerBlock) {
    const int64_t i = first + G::row_in_block();
    const bool active = i < a.n;
    const int64_t len = active ? a.c : 0;
    const T* s = a.scores + (active ? i : 0) * a.c;
    T* d = a.dscores + (active ? i : 0) * a.c;
    const int64_t label = active ? int64_t(a.labels[i]) : 0;
    const bool valid = label_in_range(label, a.c);  // (out of range: see label_in_range)
    const int64_t y = valid ? label : -1;
    const T s_label = active && valid ? s[y] : T(0);
    HingeAcc<T> acc{T(0), 0};
    for (int64_t base = 0; base < len; base += size * kUnroll) {
      T v[kUnroll];
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t j = base + k * size + lane;
        v[k] = j < len ? s[j] : T(0);
      }
#pragma unroll
      for (int k = 0; k < kUnroll; ++k) {
        const int64_t j = base + k * size + lane;
        if (j >= len || j == y) continue;
        const T term = valid ? hinge_term(v[k], s_label, a.margin) : T(0);
        acc.loss = acc.loss + term;
        acc.count += term > T(0) ? 1 : 0;
        d[j] = term > T(0) ? a.scale : T(0);
      }
    }
    acc = G::reduce(acc, AddHinge{}, HingeAcc<T>{T(0), 0});
    if (active && lane == 0) {
      if (valid) d[y] = T(0) - T(acc.count) * a.scale;  // (0 - 0 gives +0, not -0, for a row without violations)
      const T loss = valid ? acc.loss : T(NAN);
      if (a.row_losses) {
        a.row_losses[i] = loss;
      } else {
        a.rows[i] = double(loss);
      }
    }
  }
}

template <typename T, typename L>
void multiclass_svm_typed(const HingeCall& call, cudaStream_t stream) {
  const bool mean = call.reduction == Reduction::Mean;
  const bool reduce = call.reduction != Reduction::None;
  const int64_t n = call.n, c = call.c;
  T* loss = static_cast<T*>(call.loss);
  if (n == 0) {
    if (reduce) {
      finish_sum<T><<<1, kSumThreads, 0, stream>>>(nullptr, 0, nullptr, mean ? 0.0 : 1.0, loss);
      check_launch("finish_sum");
    }
    return;
  }
  Scratch scratch;
  const int64_t rows_at = scratch.reserve<double>(reduce ? n : 0);
  const int64_t parts_at = scratch.reserve<double>(reduce ? total_parts(n) : 0);
  scratch.allocate(stream);
  HingeRowsArgs<T, L> args{static_cast<const T*>(call.scores),
                           static_cast<const L*>(call.labels),
                           static_cast<T*>(call.dscores),
                           reduce ? nullptr : static_cast<T*>(call.row_losses),
                           scratch.at<double>(rows_at),
                           n,
                           c,
                           T(call.margin),
                           mean ? T(1.0 / double(n)) : T(1)};
  with_row_group(c, [&](auto group, RowLaunch launch) {
    using G = decltype(group);
    hinge_rows<G, T, L><<<row_blocks(n, launch), launch.threads, 0, stream>>>(args);
    check_launch("hinge_rows");
  });
  if (reduce) {
    launch_total<T>(scratch.at<double>(rows_at), n, scratch.at<double>(parts_at), nullptr,
                    mean ? double(n) : 1.0, loss, stream);
  }
}

// ---------------------------------------------------------------- penalty

// Block b: value of w[b*kSumChunk ..) summed in double into parts[b]; grad += the penalty's gradient.
template <typename T>
__global__ void __launch_bounds__(kSumThreads)
    penalty_chunks(const T* w, T* grad, int64_t n, T l1, T l2, double* parts) {
  const int64_t begin = int64_t(blockIdx.x) * kSumChunk;
  const int64_t end = begin + kSumChunk < n ? begin + kSumChunk : n;
  const double total = block_sum(begin, end, [=](int64_t k) {
    const T wk = w[k];
    if (grad) grad[k] = grad[k] + penalty_grad(wk, l1, l2);
    return double(penalty_value(wk, l1, l2));
  });
  if (threadIdx.x == 0) parts[blockIdx.x] = total;
}

template <typename T>
void penalty_typed(const void* w, void* grad, int64_t n, double l1, double l2, void* value, cudaStream_t stream) {
  T* out = static_cast<T*>(value);
  if (n == 0) {
    finish_sum<T><<<1, kSumThreads, 0, stream>>>(nullptr, 0, nullptr, 1.0, out);
    check_launch("finish_sum");
    return;
  }
  const int64_t blocks = ceil_div(n, kSumChunk);
  Scratch scratch;
  const int64_t parts_at = scratch.reserve<double>(blocks);
  scratch.allocate(stream);
  double* parts = scratch.at<double>(parts_at);
  penalty_chunks<T><<<grid_size(blocks, "penalty_chunks"), kSumThreads, 0, stream>>>(
      static_cast<const T*>(w), static_cast<T*>(grad), n, T(l1), T(l2), parts);
  check_launch("penalty_chunks");
  finish_sum<T><<<1, kSumThreads, 0, stream>>>(parts, blocks, nullptr, 1.0, out);
  check_launch("finish_sum");
}

// ---------------------------------------------------------------- label check

// slots[0] = max over bad labels of n - i (so the first bad index wins; 0: none). Integer atomics:
// the result does not depend on the order.
template <typename L>
__global__ void find_bad_label_kernel(const L* labels, int64_t n, int64_t c, bool has_ignore, int64_t ignore_index,
                                      unsigned long long* slots) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = int64_t(labels[i]);
    if (has_ignore && v == ignore_index) continue;
    if (v < 0 || v >= c) atomicMax(slots, static_cast<unsigned long long>(n - i));
  }
}

// slots[1] = the first bad label's value.
template <typename L>
__global__ void read_bad_label(const L* labels, int64_t n, long long* slots) {
  const long long k = slots[0];
  if (k > 0) slots[1] = static_cast<long long>(labels[n - k]);
}

// ---------------------------------------------------------------- dtype dispatch

template <typename Fn>
void with_float(DType dtype, const char* what, Fn&& fn) {
  if (dtype == DType::Float32) {
    fn(float{});
  } else if (dtype == DType::Float64) {
    fn(double{});
  } else {
    throw Error(std::string("fastopt: ") + what + " takes float32 or float64, not " + dtype_name(dtype));
  }
}

template <typename Fn>
void with_label(DType dtype, const char* what, Fn&& fn) {
  if (dtype == DType::Int32) {
    fn(int32_t{});
  } else if (dtype == DType::Int64) {
    fn(int64_t{});
  } else {
    throw Error(std::string("fastopt: ") + what + " takes int32 or int64 labels, not " + dtype_name(dtype));
  }
}

}  // namespace

// ---------------------------------------------------------------- backend.h

void cross_entropy(const CrossEntropyCall& call, const Queue& queue) {
  DeviceScope scope(queue.device);
  with_float(call.dtype, "cross_entropy", [&](auto t) {
    with_label(call.label_dtype, "cross_entropy", [&](auto l) {
      cross_entropy_typed<decltype(t), decltype(l)>(call, stream_of(queue));
    });
  });
}

void multiclass_svm(const HingeCall& call, const Queue& queue) {
  DeviceScope scope(queue.device);
  with_float(call.dtype, "multiclass_svm", [&](auto t) {
    with_label(call.label_dtype, "multiclass_svm", [&](auto l) {
      multiclass_svm_typed<decltype(t), decltype(l)>(call, stream_of(queue));
    });
  });
}

void softmax(const void* x, void* out, DType dtype, int64_t rows, int64_t c, bool log, const Queue& queue) {
  DeviceScope scope(queue.device);
  with_float(dtype, "softmax", [&](auto t) {
    using T = decltype(t);
    if (rows == 0 || c == 0) return;
    with_row_group(c, [&](auto group, RowLaunch launch) {
      using G = decltype(group);
      softmax_rows<G, T><<<row_blocks(rows, launch), launch.threads, 0, stream_of(queue)>>>(
          static_cast<const T*>(x), static_cast<T*>(out), rows, c, log);
      check_launch("softmax_rows");
    });
  });
}

void penalty(const void* w, void* grad, DType dtype, int64_t n, double l1, double l2, void* value,
             const Queue& queue) {
  DeviceScope scope(queue.device);
  with_float(dtype, "penalty", [&](auto t) {
    penalty_typed<decltype(t)>(w, grad, n, l1, l2, value, stream_of(queue));
  });
}

BadLabel find_bad_label(const void* labels, DType label_dtype, int64_t n, int64_t c, bool has_ignore,
                        int64_t ignore_index, const Queue& queue) {
  BadLabel bad;
  if (n == 0) return bad;
  DeviceScope scope(queue.device);
  // The answer is copied to the host and the stream waited for, which a stream being captured into a
  // CUDA graph does not allow: the copy would fail and invalidate the caller's capture. Refuse first,
  // before anything is queued, so that the capture stays usable.
  if (is_capturing(queue)) {
    throw Error("fastopt: the labels of a loss are checked on the device and the result read back on the host, "
                "which waits for the stream; that cannot happen while the stream is being captured into a CUDA "
                "graph. Call the loss outside the capture");
  }
  const cudaStream_t stream = stream_of(queue);
  DeviceFlag flag(queue);
  with_label(label_dtype, "find_bad_label", [&](auto l) {
    using L = decltype(l);
    const L* p = static_cast<const L*>(labels);
    const int64_t wanted = ceil_div(n, kLabelThreads);
    const unsigned blocks = unsigned(wanted < kMaxLabelBlocks ? wanted : kMaxLabelBlocks);
    find_bad_label_kernel<L><<<blocks, kLabelThreads, 0, stream>>>(
        p, n, c, has_ignore, ignore_index, reinterpret_cast<unsigned long long*>(flag.get()));
    check_launch("find_bad_label");
    read_bad_label<L><<<1, 1, 0, stream>>>(p, n, flag.get());
    check_launch("read_bad_label");
  });
  long long slots[2] = {0, 0};
  flag.read_and_wait(slots);
  if (slots[0] > 0) {
    bad.index = n - slots[0];
    bad.value = slots[1];
  }
  return bad;
}

}  // namespace fastopt::cuda
