#include "cpu/cpu_info.h"

#include <atomic>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <cstdio>

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <unistd.h>
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

// L2 per core: sysconf where glibc knows it, else sysfs (index2 is the unified L2 on x86 and arm64).
int64_t detect_l2_cache_bytes() {
#if defined(_SC_LEVEL2_CACHE_SIZE)
  const long bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
  if (bytes > 0) return int64_t(bytes);
#endif
#if defined(__linux__)
  if (FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index2/size", "r")) {
    long long size = 0;
    char unit = 0;
    const int got = std::fscanf(f, "%lld%c", &size, &unit);
    std::fclose(f);
    if (got >= 1 && size > 0) {
      if (got == 2 && (unit == 'K' || unit == 'k')) size *= 1024;
      if (got == 2 && (unit == 'M' || unit == 'm')) size *= 1024 * 1024;
      return int64_t(size);
    }
  }
#endif
  return 0;
}

constexpr int64_t kDefaultRowCacheBytes = int64_t(256) << 10;

int64_t default_row_cache_bytes() {
  static const int64_t bytes = [] {
    const int64_t l2 = detect_l2_cache_bytes();
    return l2 > 0 ? l2 / 2 : kDefaultRowCacheBytes;
  }();
  return bytes;
}

std::atomic<int64_t> g_row_cache_bytes{0};  // 0: the detected value

}  // namespace

int64_t l2_cache_bytes() {
  static const int64_t bytes = detect_l2_cache_bytes();
  return bytes;
}

int64_t loss_row_cache_bytes() {
  const int64_t set = g_row_cache_bytes.load(std::memory_order_relaxed);
  return set > 0 ? set : default_row_cache_bytes();
}

void set_loss_row_cache_bytes(int64_t bytes) {
  g_row_cache_bytes.store(bytes > 0 ? bytes : 0, std::memory_order_relaxed);
}

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
