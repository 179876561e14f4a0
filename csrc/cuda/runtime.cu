// The runtime half of backend.h: devices, versions, pointers, streams, stream-ordered memory.
#include <cuda_runtime.h>

#include <cstring>
#include <sstream>

#include "cuda/check.cuh"
#include "cuda/multi_tensor_plan.h"

namespace fastopt::cuda {

bool compiled() { return true; }

int device_count() {
  int count = 0;
  // No driver, no device, or a driver too old for this runtime: all mean "no usable GPU" here.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

// CMAKE_CUDA_ARCHITECTURES as built ("75-real,80-real,90"): "NN-real" is machine code only,
// "NN-virtual" PTX only, a bare "NN" both. Other values ("all", "native") are reported as given.
std::vector<std::string> architectures() {
  std::vector<std::string> out;
  std::stringstream list(FASTOPT_CUDA_ARCHITECTURES);
  std::string item;
  while (std::getline(list, item, ',')) {
    const size_t dash = item.find('-');
    const std::string number = item.substr(0, dash);
    const std::string kind = dash == std::string::npos ? "" : item.substr(dash + 1);
    if (number.empty() || number.find_first_not_of("0123456789") != std::string::npos) {
      out.push_back(item);
      continue;
    }
    if (kind != "virtual") out.push_back("sm_" + number);
    if (kind != "real") out.push_back("compute_" + number);
  }
  return out;
}

int runtime_version() {
  int version = 0;
  cudaRuntimeGetVersion(&version);
  return version;
}

int driver_version() {
  int version = 0;
  if (cudaDriverGetVersion(&version) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return version;
}

std::string device_name(int device) {
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return prop.name;
}

namespace {
// Compiled for the same targets as every kernel of the backend, so its image stands for theirs.
__global__ void probe_kernel() {}
}  // namespace

bool runs_kernels(int device) {
  if (device < 0 || device >= device_count()) return false;
  try {
    DeviceScope scope(device);
    cudaFuncAttributes attributes;
    // Loads the module for the device: cudaErrorNoKernelImageForDevice (or an unsupported-PTX error)
    // when nothing compiled fits it.
    if (cudaFuncGetAttributes(&attributes, probe_kernel) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return true;
  } catch (const Error&) {
    return false;
  }
}

int pointer_device(const void* ptr) {
  cudaPointerAttributes attributes;
  if (cudaPointerGetAttributes(&attributes, ptr) != cudaSuccess) {
    cudaGetLastError();
    return -1;
  }
  if (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged) {
    return attributes.device;
  }
  return -1;
}

bool is_capturing(const Queue& queue) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  check(cudaStreamIsCapturing(stream_of(queue), &status), "cudaStreamIsCapturing");
  return status != cudaStreamCaptureStatusNone;
}

// CUDA 12.1's larger kernel arguments need the build's kernels for them (multi_tensor_plan.h: every
// target of such a build is Volta or newer) and a driver of 12.1 or newer (a 12.x runtime also runs on
// a 12.0 driver). The driver is asked once: this is called for every optimizer call.
int kernel_arg_bytes(int device) {
  static const int driver = driver_version();
  if (driver == 0 || device < 0 || device >= device_count()) return 0;
  return kLargeArgsCompiled && driver >= 12010 ? int(kLargeKernelArgBytes) : int(kKernelArgBytes);
}

void* allocate(size_t bytes, const Queue& queue) {
  DeviceScope scope(queue.device);
  void* ptr = nullptr;
  check(cudaMallocAsync(&ptr, bytes == 0 ? 1 : bytes, stream_of(queue)), "cudaMallocAsync");
  return ptr;
}

void release(void* ptr, const Queue& queue) {
  DeviceScope scope(queue.device);
  check(cudaFreeAsync(ptr, stream_of(queue)), "cudaFreeAsync");
}

double read_scalar(const DeviceScalar& scalar, const Queue& queue) {
  DeviceScope scope(queue.device);
  unsigned char bytes[8] = {};
  const size_t size = scalar.dtype == DType::Float32 || scalar.dtype == DType::Int32 ? 4 : 8;
  check(cudaMemcpyAsync(bytes, scalar.ptr, size, cudaMemcpyDeviceToHost, stream_of(queue)), "cudaMemcpyAsync");
  check(cudaStreamSynchronize(stream_of(queue)), "cudaStreamSynchronize");
  float f;
  double d;
  int32_t i;
  int64_t l;
  switch (scalar.dtype) {
    case DType::Float32: std::memcpy(&f, bytes, 4); return double(f);
    case DType::Float64: std::memcpy(&d, bytes, 8); return d;
    case DType::Int32: std::memcpy(&i, bytes, 4); return double(i);
    default: std::memcpy(&l, bytes, 8); return double(l);
  }
}

void order_after(const Queue& queue, void* consumer_stream) {
  if (consumer_stream == queue.stream) return;
  DeviceScope scope(queue.device);
  cudaEvent_t event = nullptr;
  check(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  // The event may be destroyed at once: a wait queued on it stays valid (CUDA releases it when done).
  const cudaError_t recorded = cudaEventRecord(event, stream_of(queue));
  const cudaError_t waited = recorded == cudaSuccess
                                 ? cudaStreamWaitEvent(static_cast<cudaStream_t>(consumer_stream), event, 0)
                                 : recorded;
  cudaEventDestroy(event);
  check(recorded, "cudaEventRecord");
  check(waited, "cudaStreamWaitEvent");
}

}  // namespace fastopt::cuda
