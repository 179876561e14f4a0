// The runner of optim_backend.cuh that launches the multi-tensor kernels (multi_tensor.cuh) on a
// queue's stream: shared by the per-optimizer .cu files (optim_*.cu), which are separate translation
// units so that a build compiles them in parallel (each instantiates its optimizer's kernels for every
// dtype and both kernel-argument sizes).
#pragma once

#include <cuda_runtime.h>

#include "cuda/backend.h"
#include "cuda/check.cuh"
#include "cuda/multi_tensor.cuh"
#include "cuda/optim_backend.cuh"
#include "cuda/tensor_sum_kernels.cuh"

namespace fastopt::cuda {

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

  // ---- the passes of a rule with per-tensor sums (tensor_sum_kernels.cuh)
  bool large_args() const { return large_args_; }

  class Scratch : public DeviceScratch {
   public:
    Scratch(const GpuRunner& runner, int64_t doubles) : DeviceScratch(stream_of(runner.queue_), doubles) {}
  };

  template <SumPass PASS, typename Rule, int V, bool CLIP, typename T, typename S, typename Args>
  void sums(const Args& a, int64_t blocks) {
    launch_sums<PASS, Rule, V, CLIP, T, S>(a, blocks, stream_of(queue_), Rule::kName);
  }

  template <typename Rule, typename Args>
  void factors(const Args& a) {
    launch_factors<Rule>(a, stream_of(queue_), Rule::kName);
  }

  void clip(const double* squares, int64_t chunks, double max_norm, const long long* found_inf, double* clip) {
    launch_clip(squares, chunks, max_norm, found_inf, clip, stream_of(queue_), "global gradient norm");
  }

 private:
  Queue queue_;
  DeviceScope scope_;
  bool large_args_;  // the 32 KB kernel-argument space is compiled in and the driver takes it
};

}  // namespace fastopt::cuda
