// SGD and the non-finite gradient check on the GPU (backend.h): optim_backend.cuh's calls, run by the
// GPU runner (gpu_runner.cuh).
#include "cuda/gpu_runner.cuh"

namespace fastopt::cuda {

bool sgd(const DeviceTensorList<3>& list, const SgdHyper& hyper, const DeviceHyper& device_hyper,
         const Queue& queue) {
  GpuRunner runner(queue);
  return run_sgd(runner, list, hyper, device_hyper);
}

bool nonfinite(const DeviceTensorList<2>& list, double grad_scale, const Queue& queue) {
  GpuRunner runner(queue);
  return run_nonfinite(runner, list, grad_scale);
}

}  // namespace fastopt::cuda
