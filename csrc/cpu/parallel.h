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

#ifdef _OPENMP
#include <omp.h>
#endif

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
// Chunk boundaries fall on this many bytes of a tensor's first operand (one cache line, one
// AVX-512 vector): see make_chunks.
constexpr uintptr_t kChunkAlignBytes = 64;

struct Chunk {
  int32_t tensor;
  int64_t begin, end;
};

// Elements of T before the first kChunkAlignBytes boundary at or after p (0 when p is aligned, or
// when p is not even aligned to T, where no boundary can be reached).
template <typename T>
int64_t elements_to_alignment(const T* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  if (address % sizeof(T) != 0) return 0;
  return int64_t(((kChunkAlignBytes - address % kChunkAlignBytes) % kChunkAlignBytes) / sizeof(T));
}

// Appends tensor k's elements [lo, hi) to `out` as chunks of kChunkElements, the tensor's first chunk
// (lo == 0) taking `head` elements more.
static inline void append_chunks(std::vector<Chunk>& out, int32_t k, int64_t lo, int64_t hi, int64_t head) {
  for (int64_t b = lo; b < hi;) {
    const int64_t step = b == 0 ? head + kChunkElements : kChunkElements;
    const int64_t e = hi - b > step ? b + step : hi;
    out.push_back({k, b, e});
    b = e;
  }
}

// The chunks of a tensor list, in order: tensor by tensor, kChunkElements at a time. heads[k] (may be
// empty: all 0) moves tensor k's boundaries to heads[k] + j * kChunkElements, its first chunk taking
// the heads[k] elements more. With heads[k] = elements_to_alignment(first operand) every chunk but the
// first starts on a cache line, and so does every vector of the vectorised loop in it: NumPy's large
// arrays start 16 bytes past a line, and there an unaligned AVX-512 loop splits every load and store
// over two lines (16M-element SGD ran about 1.3x slower on one thread). The update is element-wise, so
// where the boundaries fall changes no bit of the result. (static: this header is compiled once per
// instruction set, and those copies must not be merged by the linker.)
static inline std::vector<Chunk> make_chunks(const std::vector<int64_t>& sizes, int64_t total,
                                             const std::vector<int64_t>& heads = {}) {
  std::vector<Chunk> chunks;
  chunks.reserve(size_t(total / kChunkElements) + sizes.size());
  for (size_t k = 0; k < sizes.size(); ++k) {
    append_chunks(chunks, int32_t(k), 0, sizes[k], heads.empty() ? 0 : heads[k]);
  }
  return chunks;
}

static inline int64_t total_elements(const std::vector<int64_t>& sizes) {
  int64_t total = 0;
  for (int64_t n : sizes) total += n;
  return total;
}

// body(c) for every chunk index c in [0, count) on a team of team_size(count) threads, handed out one
// chunk at a time (dynamic): on a machine shared with other work (the common case: torch's own threads,
// other processes) a thread that was descheduled for a while takes fewer chunks instead of holding the
// whole team at the region's end, as a fixed split would. Chunks are 256 KiB per operand, so the
// hand-out costs nothing measurable; which thread runs a chunk changes no result.
template <typename Body>
void parallel_for_chunks(int64_t count, Body&& body) {
  const int team = team_size(count);
  if (team <= 1) {
    for (int64_t i = 0; i < count; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(team)
  for (int64_t i = 0; i < count; ++i) body(i);
}

// Each tensor's cuts between threads fall on this grid of its elements, counted from its chunk head: a
// whole number of cache lines for any element size, so a thread's first chunk starts on a line too.
constexpr int64_t kThreadCutElements = 64;

// The chunks of a tensor list, one list per thread of a team of `team`: each tensor of a chunk or more
// is cut into `team` contiguous ranges as torch's at::parallel_for cuts it (thread t from about
// t * ceil(n / team), the cut moved down to the kThreadCutElements grid), each range in chunks as in
// make_chunks; smaller tensors go whole to the threads in turn. The lines a thread updates are then
// the lines the same thread reads and writes in torch's own element-wise ops on the same tensors (a
// zero_grad, the next step's gradient accumulation), so they are in its cache, not the other core's.
// Handed out dynamically, a chunk's lines were in either core's cache, and torch's zero_grad after a
// fastopt step took 1.4-1.9 ms against 0.5 ms after torch's own step (bench/bench_train_step.py, a
// 3.2M-parameter MLP, 2 threads), about 5% of the whole training step.
static inline std::vector<std::vector<Chunk>> chunks_by_thread(const std::vector<int64_t>& sizes, int team,
                                                               const std::vector<int64_t>& heads = {}) {
  if (team < 1) team = 1;
  std::vector<std::vector<Chunk>> chunks(static_cast<size_t>(team));
  size_t next_small = 0;
  for (size_t k = 0; k < sizes.size(); ++k) {
    const int64_t n = sizes[k];
    if (n <= 0) continue;
    if (n < kChunkElements) {
      chunks[next_small++ % chunks.size()].push_back({int32_t(k), 0, n});
      continue;
    }
    const int64_t head = heads.empty() ? 0 : heads[k];
    const int64_t share = (n + team - 1) / team;
    int64_t lo = 0;
    for (int t = 0; t < team; ++t) {
      int64_t hi = n;
      if (t + 1 < team) {
        const int64_t cut = int64_t(t + 1) * share;
        hi = cut <= head ? cut : head + (cut - head) / kThreadCutElements * kThreadCutElements;
        hi = hi < lo ? lo : (hi > n ? n : hi);
      }
      append_chunks(chunks[size_t(t)], int32_t(k), lo, hi, head);
      lo = hi;
    }
  }
  return chunks;
}

// The team for a list of `total` elements cut in chunks: one thread per chunk at most (team_size).
static inline int chunk_team(int64_t total) {
  return team_size((total + kChunkElements - 1) / kChunkElements);
}

// body(t) for every thread list t in [0, team), on an OpenMP team of `team`: given fewer threads than
// asked, each also runs the lists of the missing ones.
template <typename Body>
void for_each_thread_list(int team, Body&& body) {
#pragma omp parallel num_threads(team)
  {
#ifdef _OPENMP
    const int first = omp_get_thread_num(), running = omp_get_num_threads();
#else
    const int first = 0, running = 1;
#endif
    for (int t = first; t < team; t += running) body(t);
  }
}

// body(tensor_index, begin, end) for every chunk of every tensor (heads: see make_chunks), each thread
// over its own chunks_by_thread list.
template <typename Body>
void for_each_chunk(const std::vector<int64_t>& sizes, Body&& body, const std::vector<int64_t>& heads = {}) {
  const int64_t total = total_elements(sizes);
  if (total < kParallelThreshold) {
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (sizes[k] > 0) body(int32_t(k), int64_t(0), sizes[k]);
    }
    return;
  }
  const int team = chunk_team(total);
  if (team <= 1) {
    for (const Chunk& c : make_chunks(sizes, total, heads)) body(c.tensor, c.begin, c.end);
    return;
  }
  const std::vector<std::vector<Chunk>> chunks = chunks_by_thread(sizes, team, heads);
  for_each_thread_list(team, [&](int t) {
    for (const Chunk& c : chunks[size_t(t)]) body(c.tensor, c.begin, c.end);
  });
}

// True when test(tensor_index, begin, end) is true for any chunk. The chunks and their threads are
// for_each_chunk's: a pre-pass over the gradients (skip_nonfinite) leaves each thread's range in its
// own cache, where the update after it reads it again. An OR does not depend on the order or on which
// thread found it, so the answer is the same for any thread count.
template <typename Test>
bool any_chunk(const std::vector<int64_t>& sizes, Test&& test, const std::vector<int64_t>& heads = {}) {
  const int64_t total = total_elements(sizes);
  if (total < kParallelThreshold) {
    for (size_t k = 0; k < sizes.size(); ++k) {
      if (sizes[k] > 0 && test(int32_t(k), int64_t(0), sizes[k])) return true;
    }
    return false;
  }
  const int team = chunk_team(total);
  if (team <= 1) {
    for (const Chunk& c : make_chunks(sizes, total, heads)) {
      if (test(c.tensor, c.begin, c.end)) return true;
    }
    return false;
  }
  const std::vector<std::vector<Chunk>> chunks = chunks_by_thread(sizes, team, heads);
  // One flag per thread list (no shared accumulator), each list stopping at its first hit.
  std::vector<char> found(size_t(team), 0);
  for_each_thread_list(team, [&](int t) {
    for (const Chunk& c : chunks[size_t(t)]) {
      if (test(c.tensor, c.begin, c.end)) {
        found[size_t(t)] = 1;
        break;
      }
    }
  });
  for (char f : found) {
    if (f) return true;
  }
  return false;
}

}  // namespace fastopt::cpu
