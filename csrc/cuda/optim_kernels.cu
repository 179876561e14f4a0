// The optimizer half of backend.h: sgd, adagrad, rmsprop, adam and nonfinite on the GPU. The calls
// themselves (checks, dtypes, constants, the skip_nonfinite path) are optim_backend.cuh's, run
// here by a runner that launches the multi-tensor kernels (multi_tensor.cuh) on queue.stream.
#include <cuda_runtime.h>

#include "cuda/backend.h"
#include "cuda/check.cuh"
#include "cuda/multi_tensor.cuh"
#include "cuda/optim_backend.cuh"

namespace fastopt::cuda {

namespace {

// Launches on the queue's stream, with the queue's device current for its lifetime.
class GpuRunner {
 public:
  explicit GpuRunner(const Queue& queue)
      : queue_(queue), scope_(queue.device), large_args_(kernel_arg_bytes(queue.device) > int(kKernelArgBytes)) {}

  bool capturing() const { return is_capturing(queue_); }

  // found_inf: a stream-ordered device flag; read() waits for the stream (not the device).
  class Flag {
   public:
    explicit Flag(const GpuRunner& runner) : flag_(runner.queue_) {}
    long long* get() const { return flag_.get(); }
    bool read() const {
      long long slots[2] = {0, 0};
      flag_.read_and_wait(slots);
      return slots[0] != 0;
    }

   private:
    DeviceFlag flag_;
  };

  template <typename Op, typename T, typename S, int N>
  void updates(const DeviceTensorList<N>& list, const Op& op, const long long* found_inf, const char* name) {
    launch_updates<Op, T, S>(list, op, found_inf, large_args_, stream_of(queue_), name);
  }

  template <typename T, int N>
  void probe(const DeviceTensorList<N>& list, int grad, const GradScaleSource& scale, long long* found) {
    launch_probe<T>(list, grad, scale, found, large_args_, stream_of(queue_));
  }

 private:
  Queue queue_;
  DeviceScope scope_;
  bool large_args_;  // the 32 KB kernel-argument space is compiled in and the driver takes it
};

}  // namespace

bool sgd(const DeviceTensorList<3>& list, const SgdHyper& hyper, const DeviceHyper& device_hyper,
         const Queue& queue) {
  GpuRunner runner(queue);
  return run_sgd(runner, list, hyper, device_hyper);
}

bool adagrad(const DeviceTensorList<3>& list, const AdagradHyper& hyper, const DeviceHyper& device_hyper,
             const Queue& queue) {
  GpuRunner runner(queue);
  return run_adagrad(runner, list, hyper, device_hyper);
}

bool rmsprop(const DeviceTensorList<5>& list, const RmspropHyper& hyper, const DeviceHyper& device_hyper,
             const Queue& queue) {
  GpuRunner runner(queue);
  return run_rmsprop(runner, list, hyper, device_hyper);
}

bool adam(const DeviceTensorList<5>& list, const AdamHyper& hyper, const DeviceHyper& device_hyper,
          const Queue& queue) {
  GpuRunner runner(queue);
  return run_adam(runner, list, hyper, device_hyper);
}

bool nonfinite(const DeviceTensorList<2>& list, double grad_scale, const Queue& queue) {
  GpuRunner runner(queue);
  return run_nonfinite(runner, list, grad_scale);
}

}  // namespace fastopt::cuda
