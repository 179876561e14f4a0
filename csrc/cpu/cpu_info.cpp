#include "cpu/cpu_info.h"

#include <atomic>

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#define FASTOPT_HAVE_FORK 1
#endif

namespace fastopt::cpu {

namespace {

int clamp_threads(long long threads) {
  if (threads < 1) return 1;
  if (threads > kMaxThreads) return kMaxThreads;
  return int(threads);
}

// OpenMP's default count, read once when the library loads (OMP_NUM_THREADS is parsed by libgomp
// before that), capped.
int initial_threads() {
#ifdef _OPENMP
  return clamp_threads(omp_get_max_threads());
#else
  return 1;
#endif
}

std::atomic<int> g_threads{initial_threads()};
// This process is a forked child: no OpenMP region may run here (see cpu_info.h).
std::atomic<bool> g_forked{false};
// A CallingThreadOnly lives on this thread.
thread_local bool t_calling_thread_only = false;

#ifdef FASTOPT_HAVE_FORK
// Runs in the child right after fork(), with only the forking thread alive.
void on_fork_child() { g_forked.store(true, std::memory_order_relaxed); }

[[maybe_unused]] const bool g_fork_handler_registered = pthread_atfork(nullptr, nullptr, on_fork_child) == 0;
#endif

}  // namespace

bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int max_threads() {
#ifdef _OPENMP
  if (g_forked.load(std::memory_order_relaxed) || t_calling_thread_only) return 1;
  return g_threads.load(std::memory_order_relaxed);
#else
  return 1;
#endif
}

void set_num_threads(int threads) { g_threads.store(clamp_threads(threads), std::memory_order_relaxed); }

CallingThreadOnly::CallingThreadOnly() : previous_(t_calling_thread_only) { t_calling_thread_only = true; }
CallingThreadOnly::~CallingThreadOnly() { t_calling_thread_only = previous_; }

int team_size(int64_t tasks) {
  int team = max_threads();
  if (tasks < team) team = tasks < 1 ? 1 : int(tasks);
  return team;
}

}  // namespace fastopt::cpu
