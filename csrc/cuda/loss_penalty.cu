// The L1/L2 (elastic net) penalty on the GPU: value and gradient, summed deterministically.
#include "cuda/loss_rows.cuh"
#include "cuda/loss_sums.cuh"

namespace fastopt::cuda {

namespace {

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


}  // namespace

// ---------------------------------------------------------------- backend.h

void penalty(const void* w, void* grad, DType dtype, int64_t n, double l1, double l2, void* value,
             const Queue& queue) {
  DeviceScope scope(queue.device);
  with_float(dtype, "penalty", [&](auto t) {
    penalty_typed<decltype(t)>(w, grad, n, l1, l2, value, stream_of(queue));
  });
}

}  // namespace fastopt::cuda
