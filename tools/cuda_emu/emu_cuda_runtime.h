// A CPU stand-in for the CUDA runtime and the SIMT model, just enough to run loss_kernels.cu on the
// host: every block runs on its own std::threads (one per CUDA thread), blocks one after another;
// __syncthreads / __syncwarp are std::barriers, shuffles go through per-warp slots between two warp
// barriers. A kernel whose lanes do not all reach a shuffle or barrier deadlocks here (the test
// harness has a timeout), which is the point: it checks the "uniform reduction sequence" rule.
#pragma once
#include <atomic>
#include <barrier>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

struct uint3 { unsigned x = 0, y = 0, z = 0; };
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
typedef struct CUstream_st* cudaStream_t;
enum cudaMemcpyKind { cudaMemcpyDeviceToHost = 2 };

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline thread_local dim3 blockDim;
inline thread_local dim3 gridDim;

struct EmuBlock {
  std::unique_ptr<std::barrier<>> block_barrier;
  std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
  std::vector<uint64_t> slots;  // one per thread
};
inline thread_local EmuBlock* emu_block = nullptr;
inline std::atomic<long> emu_launches{0};
inline std::atomic<long> emu_bytes_live{0};

inline void __syncthreads() { emu_block->block_barrier->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_block->warp_barriers[threadIdx.x / 32]->arrive_and_wait(); }

template <typename V>
V emu_shfl(V v, int src_in_warp) {
  static_assert(sizeof(V) <= 8);
  const unsigned t = threadIdx.x;
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  emu_block->slots[t] = bits;
  __syncwarp();
  const uint64_t got = emu_block->slots[(t / 32) * 32 + src_in_warp];
  __syncwarp();
  V out;
  std::memcpy(&out, &got, sizeof out);
  return out;
}
template <typename V>
V __shfl_down_sync(unsigned, V v, int offset, int width = 32) {
  const int lane = int(threadIdx.x % 32);
  const int src = (lane % width) + offset < width ? lane + offset : lane;
  return emu_shfl(v, src);
}
template <typename V>
V __shfl_sync(unsigned, V v, int src_lane, int width = 32) {
  const int lane = int(threadIdx.x % 32);
  return emu_shfl(v, (lane / width) * width + src_lane % width);
}

inline std::mutex emu_atomic_mutex;
inline unsigned long long atomicMax(unsigned long long* p, unsigned long long v) {
  std::lock_guard<std::mutex> lock(emu_atomic_mutex);
  const unsigned long long old = *p;
  if (v > old) *p = v;
  return old;
}

inline cudaError_t emu_error = cudaSuccess;

template <typename F>
void emu_launch(dim3 grid, dim3 block, F&& body) {
  ++emu_launches;
  if (grid.x == 0 || block.x == 0 || block.x > 1024) { emu_error = 9; return; }
  const unsigned threads = block.x;
  for (unsigned b = 0; b < grid.x; ++b) {
    EmuBlock eb;
    eb.block_barrier = std::make_unique<std::barrier<>>(threads);
    for (unsigned w = 0; w < (threads + 31) / 32; ++w) {
      const unsigned in_warp = threads - w * 32 < 32 ? threads - w * 32 : 32;
      eb.warp_barriers.push_back(std::make_unique<std::barrier<>>(in_warp));
    }
    eb.slots.assign(threads, 0);
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&, t, b] {
        threadIdx = {t, 0, 0};
        blockIdx = {b, 0, 0};
        blockDim = block;
        gridDim = grid;
        emu_block = &eb;
        body();
      });
    }
    for (auto& th : pool) th.join();
  }
}

inline cudaError_t cudaGetLastError() { const cudaError_t e = emu_error; emu_error = cudaSuccess; return e; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaErrorEmu"; }
inline cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaMallocAsync(void** p, size_t n, cudaStream_t) {
  *p = std::malloc(n + sizeof(size_t));
  std::memset(*p, 0xff, n + sizeof(size_t));  // NaN everywhere: reading unwritten scratch shows
  emu_bytes_live += long(n);
  return cudaSuccess;
}
inline cudaError_t cudaFreeAsync(void* p, cudaStream_t) { std::free(p); return cudaSuccess; }
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) { std::memset(p, v, n); return cudaSuccess; }
inline cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, cudaMemcpyKind, cudaStream_t) {
  std::memcpy(d, s, n);
  return cudaSuccess;
}
inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
