// Splits the elements of a tensor list into fixed-size chunks and runs a body over each chunk,
// on OpenMP threads when there is enough work. The updates are element-wise, so every element
// sees the same arithmetic whatever the thread count: results are bit-identical for any count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastopt::cpu {

// 64K elements (256 KiB of float32 per operand) keeps a chunk well inside L2 and the
// per-chunk overhead negligible; below two chunks of work, threads cost more than they save.
constexpr int64_t kChunkElements = int64_t(1) << 16;
constexpr int64_t kParallelThreshold = 2 * kChunkElements;

struct Chunk {
  int32_t tensor;
  int64_t begin, end;
};

// The chunks of a tensor list, in order: tensor by tensor, kChunkElements at a time. (static: this
// header is compiled once per instruction set, and those copies must not be merged by the linker.)
static inline std::vector<Chunk> make_chunks(const std::vector<int64_t>& sizes, int64_t total) {
  std::vector<Chunk> chunks;
  chunks.reserve(size_t(total / kChunkElements) + sizes.size());
  for (size_t k = 0; k < sizes.size(); ++k) {
    for (int64_t b = 0; b < sizes[k]; b += kChunkElements) {
      const int64_t e = b + kChunkElements < sizes[k] ? b + kChunkElements : sizes[k];
      chunks.push_back({int32_t(k), b, e});
    }
  }
  return chunks;
}

static inline int64_t total_elements(const std::vector<int64_t>& sizes) {
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  return total;
}

// body(tensor_index, begin, end) for every chunk of every tensor.
template <typename Body>
void for_each_chunk(const std::vector<int64_t>& sizes, Body&& body) {
  const int64_t total = total_elements(sizes);
  if (total < kParallelThreshold) {
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (sizes[k] > 0) body(int32_t(k), int64_t(0), sizes[k]);
    }
    return;
  }
  const std::vector<Chunk> chunks = make_chunks(sizes, total);
  const int64_t count = int64_t(chunks.size());
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < count; ++c) {
    body(chunks[c].tensor, chunks[c].begin, chunks[c].end);
  }
}

// True when test(tensor_index, begin, end) is true for any chunk: the same chunks and threads as
// for_each_chunk. Every chunk is read (no early exit across threads), and an OR does not depend on
// the order, so the answer is the same for any thread count.
template <typename Test>
bool any_chunk(const std::vector<int64_t>& sizes, Test&& test) {
  const int64_t total = total_elements(sizes);
  if (total < kParallelThreshold) {
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (sizes[k] > 0 && test(int32_t(k), int64_t(0), sizes[k])) return true;
    }
    return false;
  }
  const std::vector<Chunk> chunks = make_chunks(sizes, total);
  const int64_t count = int64_t(chunks.size());
  int found = 0;
#pragma omp parallel for schedule(static) reduction(| : found)
  for (int64_t c = 0; c < count; ++c) {
    found |= test(chunks[c].tensor, chunks[c].begin, chunks[c].end) ? 1 : 0;
  }
  return found != 0;
}

}  // namespace fastopt::cpu
