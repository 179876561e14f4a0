// Threading of the CPU backend: one process-wide thread count, capped, and fork safety.
//
// libgomp keeps its thread count per thread (omp_set_num_threads sets the calling thread's copy),
// so a count set from one Python thread would not reach a kernel called from another. fastopt keeps
// its own count instead, in one atomic, and every parallel region passes it as num_threads(...).
// It starts as OpenMP's default (OMP_NUM_THREADS, else the CPUs this process may use), capped at
// kMaxThreads like set_num_threads: libgomp crashes on absurd counts (OMP_NUM_THREADS=100000).
//
// libgomp's worker threads do not survive fork(): a forked child that enters a parallel region
// waits forever for threads that only existed in the parent. The pool may have been started by
// anyone sharing libgomp (torch ships and loads the same libgomp.so.1), so a child forked from this
// process runs every kernel on its calling thread (the same bits: results never depend on the
// thread count), as torch's own CPU ops do after fork. (Threaded children: multiprocessing's
// 'spawn' or 'forkserver' start methods.)
#pragma once

#include <cstdint>

namespace fastopt::cpu {

// The largest thread count fastopt uses, whatever asks for more.
constexpr int kMaxThreads = 1024;

// Whether OpenMP threading is compiled in.
bool has_openmp();
// The thread count large updates and losses use now: the setting, or 1 in a forked child (and 1
// without OpenMP).
int max_threads();
// Sets the process-wide thread count (clamped to [1, kMaxThreads]; the binding refuses values
// outside it). No effect without OpenMP.
void set_num_threads(int threads);

// The team for a parallel region over `tasks` independent pieces of work: max_threads(), but never
// more threads than tasks. 1 means "run on the calling thread, without entering OpenMP at all".
int team_size(int64_t tasks);

// The bytes of one row that the loss loops keep in cache between a row's two passes: half the L2
// cache of one core as the CPU reports it (sysconf / sysfs; 256 KiB when it reports nothing), so that
// the row, the code's other data and a neighbour's lines fit together. Rows longer than this take the
// split path (loss_loops.h). Read once; set_loss_row_cache_bytes overrides it (tests use that to run
// the split path on small rows; 0 restores the detected value). Never depends on the thread count.
int64_t loss_row_cache_bytes();
void set_loss_row_cache_bytes(int64_t bytes);
// The L2 size per core the CPU reports, in bytes (0 when unknown).
int64_t l2_cache_bytes();

// While one lives on a thread, the kernels called on that thread run on it alone (max_threads() is 1
// there). fastopt.jax's handlers run on threads of XLA's runtime, beside XLA's own thread pool, where
// OpenMP teams cost more than they bring (csrc/jax/kernel_threads.h says why).
class CallingThreadOnly {
 public:
  CallingThreadOnly();
  ~CallingThreadOnly();
  CallingThreadOnly(const CallingThreadOnly&) = delete;
  CallingThreadOnly& operator=(const CallingThreadOnly&) = delete;

 private:
  bool previous_;
};

}  // namespace fastopt::cpu
