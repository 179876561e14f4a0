// The multiclass SVM (hinge) loss on the GPU (see loss_common.cuh for the overview).
#include "cuda/loss_rows.cuh"
#include "cuda/loss_sums.cuh"

namespace fastopt::cuda {

namespace {

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


}  // namespace

// ---------------------------------------------------------------- backend.h

void multiclass_svm(const HingeCall& call, const Queue& queue) {
  DeviceScope scope(queue.device);
  with_float(call.dtype, "multiclass_svm", [&](auto t) {
    with_label(call.label_dtype, "multiclass_svm", [&](auto l) {
      multiclass_svm_typed<decltype(t), decltype(l)>(call, stream_of(queue));
    });
  });
}

}  // namespace fastopt::cuda
