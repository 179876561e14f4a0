// Host-side planning of multi-tensor launches: plain C++ (no CUDA headers), so it can be unit-tested
// without a GPU or nvcc.
//
// A list of tensors is cut into chunks of kChunkElements elements (the last chunk of a tensor may be
// shorter; empty tensors have none). One launch carries up to K tensors in a TensorBatch, passed by
// value as a kernel argument: their operand pointers, sizes, the index of each tensor's first chunk
// within the launch, and whether vector loads (one per operand per thread and iteration: 16 bytes,
// 8 for float16 / bfloat16 parameters) are allowed for it. The grid has one block
// per chunk of the launch; block b finds its tensor k as the last one with chunk_start[k] <= b.
//
// The batch must fit the kernel-argument space together with the update's constants, so K shrinks
// as the operand count N grows. In the 4 KB every CUDA version and GPU allow: 67 tensors for N = 5
// (Adam, RMSprop), 96 for N = 3 (SGD, Adagrad), 169 for N = 1 (the non-finite gradient pre-pass), so
// GPT-2 small's 148 tensors take three Adam launches. CUDA 12.1+ allows 32,764 bytes on Volta and
// newer (toolkit and driver both): 608 / 871 / 1535 tensors, one launch. The larger space is used
// only for lists that do not fit one 4 KB launch, since every launch copies its whole argument.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fastopt/macros.h"

namespace fastopt::cuda {

// Elements per chunk (one block's work). A multiple of every vector width, so that every chunk of
// a tensor starts as aligned as the tensor itself.
constexpr int64_t kChunkElements = int64_t(1) << 16;
constexpr int kBlockThreads = 512;
// Kernel-argument space: kKernelArgBytes everywhere, kLargeKernelArgBytes with CUDA 12.1+ on Volta
// and newer. kArgReserve bytes of either hold the update's constants (hyperparameters, flags,
// pointers); the rest, the tensor metadata.
constexpr size_t kKernelArgBytes = 4096;
constexpr size_t kLargeKernelArgBytes = 32764;
constexpr size_t kArgReserve = 512;
constexpr size_t kBatchBytes = kKernelArgBytes - kArgReserve;            // 3584
constexpr size_t kLargeBatchBytes = kLargeKernelArgBytes - kArgReserve;  // 32252
// Whether this build has kernels for the larger space: CMake defines FASTOPT_CUDA_LARGE_PARAMS when
// the CUDA compiler is 12.1 or newer and every target architecture is sm_70 or newer (an older
// target would not compile them). Whether the driver takes them is asked at run time.
#ifdef FASTOPT_CUDA_LARGE_PARAMS
constexpr bool kLargeArgsCompiled = true;
#else
constexpr bool kLargeArgsCompiled = false;
#endif
// The most chunks (blocks) one launch may have: far below the grid's limit of 2^31 - 1 blocks.
constexpr int64_t kMaxChunksPerLaunch = int64_t(1) << 30;

constexpr int64_t chunk_count(int64_t elements) {
  return (elements + kChunkElements - 1) / kChunkElements;
}

// The tensors one batch can carry for N operands: what fits in BATCH_BYTES.
template <int N, size_t BATCH_BYTES = kBatchBytes>
constexpr int tensors_per_batch() {
  // per tensor: N pointers, the size, a chunk start, a vector flag; plus one more chunk start and
  // the count, and padding
  return int((BATCH_BYTES - 16) / (sizeof(void*) * N + sizeof(int64_t) + sizeof(int32_t) + 1));
}

template <int N, int K = tensors_per_batch<N>()>
struct TensorBatch {
  static constexpr int kOperands = N;
  static constexpr int kCapacity = K;

  void* ptrs[K][N];            // operand j of tensor k (nullptr where unused)
  int64_t sizes[K];            // elements of tensor k (> 0)
  int32_t chunk_start[K + 1];  // first block of tensor k; chunk_start[count] = the grid size
  uint8_t vectorised[K];       // 1: every operand the update touches is aligned for vector access
  int32_t count;               // tensors in this batch (1..K)
};

static_assert(sizeof(TensorBatch<5>) <= kBatchBytes, "5-operand batch too large");
static_assert(sizeof(TensorBatch<3>) <= kBatchBytes, "3-operand batch too large");
static_assert(sizeof(TensorBatch<1>) <= kBatchBytes, "1-operand batch too large");
static_assert(sizeof(TensorBatch<5, tensors_per_batch<5, kLargeBatchBytes>()>) <= kLargeBatchBytes, "large batch");
static_assert(sizeof(TensorBatch<3, tensors_per_batch<3, kLargeBatchBytes>()>) <= kLargeBatchBytes, "large batch");
static_assert(sizeof(TensorBatch<1, tensors_per_batch<1, kLargeBatchBytes>()>) <= kLargeBatchBytes, "large batch");

// Why a list cannot be launched, or nullptr when it can: a negative size, a tensor of more than
// kMaxChunksPerLaunch chunks, or a null operand that the update touches (bit j of `used`: operand j)
// in a non-empty tensor. The backend checks every list with it before it launches anything, so a
// refused call writes nothing. operand(k, j) gives operand j of tensor k as a void*.
template <int N, typename Operand>
const char* list_problem(size_t count, const int64_t* sizes, Operand&& operand, unsigned used) {
  for (size_t k = 0; k < count; ++k) {
    if (sizes[k] < 0) return "a negative tensor size";
    if (sizes[k] == 0) continue;
    if (chunk_count(sizes[k]) > kMaxChunksPerLaunch) return "a tensor too large for one launch";
    for (int j = 0; j < N; ++j) {
      if (((used >> j) & 1u) && operand(k, j) == nullptr) return "a null pointer for an operand in use";
    }
  }
  return nullptr;
}

// Whether a list (checked by list_problem) fits one launch of `capacity` tensors: its non-empty
// tensors are at most that many and their chunks at most kMaxChunksPerLaunch.
inline bool fits_one_batch(size_t count, const int64_t* sizes, int capacity) {
  int tensors = 0;
  int64_t chunks = 0;
  for (size_t k = 0; k < count; ++k) {
    if (sizes[k] <= 0) continue;
    ++tensors;
    chunks += chunk_count(sizes[k]);
  }
  return tensors <= capacity && chunks <= kMaxChunksPerLaunch;
}

// Fills batches from a list of `count` tensors (checked by list_problem) and calls
// launch(batch, blocks) for each full batch and the last one, in list order. Bit j of `used` says
// whether the update touches operand j: a tensor is vectorised when each of those operands is a
// multiple of alignment[j] bytes (the kernel's vector width for it: 8 or 16). Empty tensors are
// skipped; a list with no elements launches nothing. Returns the number of launches.
template <int N, int K, typename Operand, typename Launch>
int plan_batches(size_t count, const int64_t* sizes, Operand&& operand, unsigned used, const int (&alignment)[N],
                 Launch&& launch) {
  TensorBatch<N, K> batch;
  batch.count = 0;
  batch.chunk_start[0] = 0;
  int launches = 0;
  auto flush = [&] {
    if (batch.count == 0) return;
    launch(static_cast<const TensorBatch<N, K>&>(batch), int64_t(batch.chunk_start[batch.count]));
    ++launches;
    batch.count = 0;
    batch.chunk_start[0] = 0;
  };
  for (size_t k = 0; k < count; ++k) {
    const int64_t size = sizes[k];
    if (size <= 0) continue;
    const int64_t chunks = chunk_count(size);
    if (batch.count == K || int64_t(batch.chunk_start[batch.count]) + chunks > kMaxChunksPerLaunch) flush();
    const int slot = batch.count;
    bool aligned = true;
    for (int j = 0; j < N; ++j) {
      void* ptr = operand(k, j);
      batch.ptrs[slot][j] = ptr;
      if (((used >> j) & 1u) && reinterpret_cast<uintptr_t>(ptr) % uintptr_t(alignment[j]) != 0) aligned = false;
    }
    batch.sizes[slot] = size;
    batch.vectorised[slot] = aligned ? 1 : 0;
    batch.chunk_start[slot + 1] = int32_t(int64_t(batch.chunk_start[slot]) + chunks);
    batch.count = slot + 1;
  }
  flush();
  return launches;
}

// The tensor owning block `block` of a batch: the last k < count with chunk_start[k] <= block
// (binary search; chunk starts strictly increase because empty tensors are never in a batch).
template <int N, int K>
FASTOPT_HD int find_tensor(const TensorBatch<N, K>& batch, int64_t block) {
  int lo = 0, hi = batch.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (int64_t(batch.chunk_start[mid]) <= block) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

}  // namespace fastopt::cuda
