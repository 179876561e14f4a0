// Adam and AdamW on the GPU (backend.h): optim_backend.cuh's call, run by the GPU runner (gpu_runner.cuh).
#include "cuda/gpu_runner.cuh"

namespace fastopt::cuda {

bool adam(const DeviceTensorList<5>& list, const AdamHyper& hyper, const DeviceHyper& device_hyper,
          const Queue& queue) {
  GpuRunner runner(queue);
  return run_adam(runner, list, hyper, device_hyper);
}

}  // namespace fastopt::cuda
