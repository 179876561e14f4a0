// Error checking and small helpers shared by the .cu files of the CUDA backend.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "cuda/backend.h"

namespace fastopt::cuda {

// Throws Error for a failed CUDA call, naming the operation. cudaGetLastError() clears the error
// state of a non-sticky error, so the next call starts clean.
inline void check(cudaError_t status, const char* what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();
  throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(status) + " (" +
              cudaGetErrorName(status) + ")");
}

// After a <<<...>>> launch: a bad configuration or a failed launch surfaces here.
inline void check_launch(const char* kernel) { check(cudaGetLastError(), kernel); }

inline cudaStream_t stream_of(const Queue& queue) { return static_cast<cudaStream_t>(queue.stream); }

// Makes queue.device the current device for a scope and restores the caller's afterwards.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
  }
  ~DeviceScope() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }
  DeviceScope(const DeviceScope&) = delete;
  DeviceScope& operator=(const DeviceScope&) = delete;

 private:
  int previous_ = 0;
};

// One int on the device, stream-ordered: allocated and zeroed on the queue's stream, freed there too.
// Used for flags a kernel raises (found_inf) and the host reads back with read_and_wait().
class DeviceFlag {
 public:
  explicit DeviceFlag(const Queue& queue) : stream_(stream_of(queue)) {
    check(cudaMallocAsync(reinterpret_cast<void**>(&flag_), sizeof(long long) * 2, stream_), "cudaMallocAsync");
    const cudaError_t zeroed = cudaMemsetAsync(flag_, 0, sizeof(long long) * 2, stream_);
    if (zeroed != cudaSuccess) release();  // a throwing constructor runs no destructor
    check(zeroed, "cudaMemsetAsync");
  }
  ~DeviceFlag() { release(); }
  DeviceFlag(const DeviceFlag&) = delete;
  DeviceFlag& operator=(const DeviceFlag&) = delete;

  long long* get() const { return flag_; }  // two slots, both 0 at the start

  // Copies both slots to the host and waits for this stream (not the device).
  void read_and_wait(long long out[2]) const {
    check(cudaMemcpyAsync(out, flag_, sizeof(long long) * 2, cudaMemcpyDeviceToHost, stream_), "cudaMemcpyAsync");
    check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

 private:
  // Errors here would be the stream's, already reported (or being reported): clear them, so that
  // the next call's check_launch does not pick them up as its own; never throw.
  void release() {
    if (flag_ && cudaFreeAsync(flag_, stream_) != cudaSuccess) cudaGetLastError();
    flag_ = nullptr;
  }

  cudaStream_t stream_;
  long long* flag_ = nullptr;
};

// Doubles on the device, stream-ordered (allocated and freed on the stream, as DeviceFlag).
class DeviceScratch {
 public:
  DeviceScratch(cudaStream_t stream, int64_t doubles) : stream_(stream) {
    check(cudaMallocAsync(reinterpret_cast<void**>(&data_), size_t(doubles) * sizeof(double), stream_),
          "cudaMallocAsync");
  }
  ~DeviceScratch() {
    if (data_ && cudaFreeAsync(data_, stream_) != cudaSuccess) cudaGetLastError();
  }
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  double* get() const { return data_; }

 private:
  cudaStream_t stream_;
  double* data_ = nullptr;
};

}  // namespace fastopt::cuda
