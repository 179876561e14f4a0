// Deterministic sums of doubles on the GPU (per-row losses, penalty chunks): fixed chunks, then one
// block's fixed tree; no floating-point atomics (see loss_common.cuh for the overview).
#pragma once

#include "cuda/loss_rows.cuh"

namespace fastopt::cuda {

namespace {

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


}  // namespace

}  // namespace fastopt::cuda
