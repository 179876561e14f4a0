// Splits the elements of a tensor list into fixed-size chunks and runs a body over each chunk,
// on OpenMP threads when there is enough work. The updates are element-wise, so every element
// sees the same arithmetic whatever the thread count: results are bit-identical for any count.
//
// Every parallel region of the CPU backend is one of the loops below. Each asks cpu_info.h for its
// team (the process-wide count, fork-safe) and passes it as num_threads(...), so that neither
// libgomp's per-thread setting nor OMP_NUM_THREADS decides it; a team of 1 runs the loop on the
// calling thread without entering OpenMP at all (which is what keeps a forked child alive).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cpu/cpu_info.h"

namespace fastopt::cpu {

// body(i) for i in [0, count), on a team of team_size(count) threads when `worth_threads`, else on
// the calling thread. Iterations must be independent (each writes its own outputs).
template <typename Body>
void parallel_for(int64_t count, bool worth_threads, Body&& body) {
  const int team = worth_threads ? team_size(count) : 1;
  if (team <= 1) {
    for (int64_t i = 0; i < count; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(team)
  for (int64_t i = 0; i < count; ++i) body(i);
}

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
  parallel_for(int64_t(chunks.size()), true,
               [&](int64_t c) { body(chunks[size_t(c)].tensor, chunks[size_t(c)].begin, chunks[size_t(c)].end); });
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
  // One flag per chunk (no shared accumulator), ORed in order afterwards.
  std::vector<char> found(chunks.size(), 0);
  parallel_for(int64_t(chunks.size()), true, [&](int64_t c) {
    const Chunk& k = chunks[size_t(c)];
    found[size_t(c)] = test(k.tensor, k.begin, k.end) ? 1 : 0;
  });
  for (char f : found) {
    if (f) return true;
  }
  return false;
}

}  // namespace fastopt::cpu
