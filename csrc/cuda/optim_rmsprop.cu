// RMSprop on the GPU (backend.h): optim_backend.cuh's call, run by the GPU runner (gpu_runner.cuh).
#include "cuda/gpu_runner.cuh"

namespace fastopt::cuda {

bool rmsprop(const DeviceTensorList<5>& list, const RmspropHyper& hyper, const DeviceHyper& device_hyper,
             const Queue& queue) {
  GpuRunner runner(queue);
  return run_rmsprop(runner, list, hyper, device_hyper);
}

}  // namespace fastopt::cuda
