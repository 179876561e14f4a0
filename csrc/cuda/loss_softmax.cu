// softmax / log_softmax over rows on the GPU (see loss_common.cuh for the overview).
#include "cuda/loss_rows.cuh"

namespace fastopt::cuda {

namespace {

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


}  // namespace

// ---------------------------------------------------------------- backend.h

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

}  // namespace fastopt::cuda
