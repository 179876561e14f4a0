// Element-wise work on XLA's intra-op thread pool (the FFI's ThreadPool context), for the handlers of
// the updates and of softmax: the list (or the rows) is cut into pieces, each piece is one call of the
// same kernel on one thread, and the pieces are shared out among the calling thread and helpers
// scheduled on XLA's pool. The work is element-wise (row-wise for softmax), so any cut gives the same
// bits as one call over everything.
//
// Why not the kernels' own OpenMP threads: see kernel_threads.h. XLA's pool is the one XLA uses for
// its own operations, so the update runs in parallel as optax's fused loop does, without a second set
// of threads competing with it.
//
// No deadlock whatever the pool does: the pieces are claimed one at a time from a shared counter, the
// calling thread claims them too, and it waits only for pieces already claimed (hence running). A
// helper that starts late finds nothing left and returns; the shared state it touches is kept alive by
// its own reference.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "cpu/cpu_info.h"
#include "cpu/parallel.h"
#include "cpu/tensor_list.h"
#include "jax/ffi_support.h"

namespace fastopt::jax_ffi {

// No piece smaller than this (the kernels' own threshold for threads: below it one thread is faster).
constexpr int64_t kMinPiece = cpu::kParallelThreshold;

// How many pieces `elements` of work make on a pool of `threads` (plus the caller).
inline int piece_count(int64_t elements, int64_t threads) {
  const int64_t by_size = elements / kMinPiece;
  return int(std::max<int64_t>(1, std::min<int64_t>(by_size, std::max<int64_t>(threads, 1))));
}

// [begin, end) bounds of `pieces` nearly equal parts of `total`, cut at multiples of `align`.
inline std::vector<int64_t> cuts(int64_t total, int pieces, int64_t align) {
  std::vector<int64_t> at{0};
  for (int i = 1; i < pieces; ++i) {
    const int64_t cut = (total * i / pieces) / align * align;
    at.push_back(std::max(cut, at.back()));
  }
  at.push_back(total);
  return at;
}

// The pieces of a tensor list: elements [cut_i, cut_{i+1}) of the list's elements taken in order.
template <typename T, int N>
std::vector<cpu::TensorList<T, N>> split_list(const cpu::TensorList<T, N>& list, int pieces) {
  int64_t total = 0;
  for (int64_t n : list.sizes) total += n;
  const std::vector<int64_t> at = cuts(total, pieces, cpu::kChunkElements);
  std::vector<cpu::TensorList<T, N>> out(static_cast<size_t>(pieces));
  int64_t offset = 0;  // of tensor k in the concatenation
  for (size_t k = 0; k < list.sizes.size(); ++k) {
    const int64_t n = list.sizes[k];
    for (int p = 0; p < pieces; ++p) {
      const int64_t begin = std::max(at[size_t(p)], offset), end = std::min(at[size_t(p) + 1], offset + n);
      if (begin >= end) continue;
      std::array<T*, N> operands;
      for (int j = 0; j < N; ++j) {
        T* base = list.ptrs[k][size_t(j)];
        operands[size_t(j)] = base ? base + (begin - offset) : nullptr;
      }
      out[size_t(p)].add(operands, end - begin);
    }
    offset += n;
  }
  return out;
}

// For work that must keep each tensor whole on one thread (per-tensor sums: LAMB's norms, Adafactor's row
// and column means): the indices of `sizes` in at most `pieces` groups of about equal total, the largest
// first, each to the group with the least so far; no group is empty. Which group runs a tensor changes no
// bit, since each tensor's numbers depend on that tensor alone.
inline std::vector<std::vector<size_t>> whole_tensors(const std::vector<int64_t>& sizes, int pieces) {
  std::vector<size_t> order(sizes.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
  std::vector<std::vector<size_t>> groups(static_cast<size_t>(std::max(pieces, 1)));
  std::vector<int64_t> load(groups.size(), 0);
  for (size_t i : order) {
    const size_t g = size_t(std::min_element(load.begin(), load.end()) - load.begin());
    groups[g].push_back(i);
    load[g] += sizes[i];
  }
  groups.erase(std::remove_if(groups.begin(), groups.end(), [](const auto& g) { return g.empty(); }), groups.end());
  return groups;
}

// The list cut into pieces of whole tensors (whole_tensors).
template <typename T, int N>
std::vector<cpu::TensorList<T, N>> split_by_tensor(const cpu::TensorList<T, N>& list, int pieces) {
  std::vector<cpu::TensorList<T, N>> out;
  for (const std::vector<size_t>& group : whole_tensors(list.sizes, pieces)) {
    cpu::TensorList<T, N> piece;
    for (size_t k : group) piece.add(list.ptrs[k], list.sizes[k]);
    out.push_back(std::move(piece));
  }
  return out;
}

// body(piece) for every piece, on the calling thread and on XLA's pool; returns when all are done.
// An exception from a body is rethrown here (after every claimed piece has finished).
template <typename Piece, typename Body>
void run_pieces(ffi::ThreadPool& pool, std::vector<Piece> pieces, Body body) {
  if (pieces.empty()) return;
  struct Shared {
    std::vector<Piece> pieces;
    Body body;
    std::atomic<size_t> next{0};
    std::mutex mutex;
    std::condition_variable all_done;
    size_t done = 0;
    std::exception_ptr error;
    Shared(std::vector<Piece> p, Body b) : pieces(std::move(p)), body(std::move(b)) {}
  };
  auto shared = std::make_shared<Shared>(std::move(pieces), std::move(body));
  auto work = [shared] {
    const cpu::CallingThreadOnly alone;  // one kernel call per piece, on this thread
    for (size_t i; (i = shared->next.fetch_add(1)) < shared->pieces.size();) {
      std::exception_ptr error;
      try {
        shared->body(shared->pieces[i]);
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(shared->mutex);
      if (error && !shared->error) shared->error = error;
      if (++shared->done == shared->pieces.size()) shared->all_done.notify_all();
    }
  };
  const size_t helpers = shared->pieces.size() - 1;
  for (size_t h = 0; h < helpers; ++h) pool.Schedule(decltype(work)(work));  // (a copy for each: F must not be a reference)
  work();
  std::unique_lock<std::mutex> lock(shared->mutex);
  shared->all_done.wait(lock, [&] { return shared->done == shared->pieces.size(); });
  if (shared->error) std::rethrow_exception(shared->error);
}

}  // namespace fastopt::jax_ffi
