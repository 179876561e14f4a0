// The losses of backend.h on the GPU (one .cu per operation: loss_cross_entropy.cu, loss_softmax.cu,
// loss_hinge.cu, loss_penalty.cu, loss_labels.cu; row groups in loss_rows.cuh, sums in loss_sums.cuh): softmax cross-entropy (torch semantics), softmax/log_softmax,
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
// refuses inside a capture (by default the bindings leave it out there: see check_labels).
//
// In place (dlogits == logits, or dscores == scores): every element is read before it is written, by
// the thread that writes it. The cross-entropy needs the label's own score z_y only in the loss,
// which the thread owning element y computes from its own pass-2 read (no other thread writes y).
// The hinge needs s_y in every thread: each reads it first, and d_y is written by lane 0 only after
// the group's reduction, which is a barrier (__syncthreads / __syncwarp).
//
// This header: the constants, grid sizes, the stream-ordered scratch, the label guard and the dtype
// dispatch that every loss file uses.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "cuda/check.cuh"
#include "fastopt/fastopt.h"

namespace fastopt::cuda {

namespace {

constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kUnroll = 4;                  // elements per thread per step of a row loop
constexpr int kSumThreads = 512;            // the single-block reductions and the chunk sums
constexpr int64_t kSumChunk = 16384;        // values summed by one block before the final sum
constexpr int64_t kMaxRowBlocks = 1 << 20;  // grid cap of the row kernels (a grid-stride loop beyond)

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

// Labels. The bindings check every label first (find_bad_label), but other work on the device may change
// one before a kernel reads it: a label outside [0, c) is never used as an index. Its row counts nothing,
// gets a zero gradient and a NaN loss (as on the CPU), so that the result shows it.
__device__ __forceinline__ bool label_in_range(int64_t y, int64_t c) { return y >= 0 && y < c; }

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

}  // namespace fastopt::cuda
