// Adafactor on the GPU (backend.h): adafactor_passes.cuh's passes, each one launch of independent
// threads, one thread per item, on the queue's stream.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda/adafactor_passes.cuh"
#include "cuda/check.cuh"

namespace fastopt::cuda {

namespace {

constexpr int kItemThreads = 256;
// Enough blocks to fill any GPU; a grid-stride loop takes the rest.
constexpr int64_t kMostItemBlocks = int64_t(1) << 16;

template <typename Pass>
__global__ void __launch_bounds__(kItemThreads) items_kernel(const Pass pass, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * kItemThreads + threadIdx.x; i < n; i += int64_t(gridDim.x) * kItemThreads) {
    pass(i);
  }
}

class AdafactorRunner {
 public:
  explicit AdafactorRunner(const Queue& queue) : queue_(queue), scope_(queue.device) {}

  class Scratch : public DeviceScratch {
   public:
    Scratch(const AdafactorRunner& runner, int64_t doubles) : DeviceScratch(stream_of(runner.queue_), doubles) {}
  };

  template <typename Pass>
  void items(int64_t n, const Pass& pass) {
    if (n <= 0) return;
    const int64_t blocks = std::min((n + kItemThreads - 1) / kItemThreads, kMostItemBlocks);
    items_kernel<Pass><<<dim3(unsigned(blocks)), dim3(kItemThreads), 0, stream_of(queue_)>>>(pass, n);
    check_launch("adafactor");
  }

 private:
  Queue queue_;
  DeviceScope scope_;
};

template <typename T>
void run_on_gpu(const std::vector<cpu::AdafactorTensor<T>>& tensors, const AdafactorHyper& hyper,
                const Queue& queue) {
  AdafactorRunner runner(queue);
  adafactor_passes::run(runner, tensors, hyper);
}

}  // namespace

void adafactor(const std::vector<cpu::AdafactorTensor<float>>& tensors, const AdafactorHyper& hyper,
               const Queue& queue) {
  run_on_gpu(tensors, hyper, queue);
}

void adafactor(const std::vector<cpu::AdafactorTensor<double>>& tensors, const AdafactorHyper& hyper,
               const Queue& queue) {
  run_on_gpu(tensors, hyper, queue);
}

}  // namespace fastopt::cuda
