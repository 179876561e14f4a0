// Softmax cross-entropy on the GPU (torch's F.cross_entropy numbers): the launches, the row kernel
// and the device-side scalars (see loss_common.cuh for the overview).
#include "cuda/loss_rows.cuh"
#include "cuda/loss_sums.cuh"

namespace fastopt::cuda {

namespace {

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

}  // namespace fastopt::cuda
