// Values an update kernel reads on the device when it runs, rather than values the host computed when
// it queued the launch: lr and step (torch's capturable=True), the loss scale and found_inf (torch's
// GradScaler on CUDA). Each is a pointer and a dtype in the kernel argument, so that nothing waits
// for the device and a captured CUDA graph replays with whatever the arrays hold at replay time.
//
// Host and device code alike (the host simulation, tests/cuda_host, runs it on host memory).
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "fastopt/fastopt.h"
#include "fastopt/macros.h"

namespace fastopt::cuda {

// One number in device memory: float32, float64, int32 or int64 (checked on the host before any launch).
struct NumberRef {
  const void* ptr = nullptr;
  DType dtype = DType::Float32;

  FASTOPT_HD explicit operator bool() const { return ptr != nullptr; }

  FASTOPT_HD double read() const {
    switch (dtype) {
      case DType::Float64: return *static_cast<const double*>(ptr);
      case DType::Int32: return double(*static_cast<const int32_t*>(ptr));
      case DType::Int64: return double(*static_cast<const int64_t*>(ptr));
      default: return double(*static_cast<const float*>(ptr));
    }
  }
  // An integer count (a step): floating values (torch keeps its capturable steps as float32) are
  // truncated; int64 is read exactly.
  FASTOPT_HD int64_t read_integer() const {
    switch (dtype) {
      case DType::Int32: return int64_t(*static_cast<const int32_t*>(ptr));
      case DType::Int64: return *static_cast<const int64_t*>(ptr);
      case DType::Float64: return int64_t(*static_cast<const double*>(ptr));
      default: return int64_t(*static_cast<const float*>(ptr));
    }
  }
};

// How the gradient operand is unscaled: g / scale when scaled, g itself otherwise (exactly the CPU
// loops' unscale_grad<SCALED>(g, T(grad_scale))).
template <typename M>
struct GradUnscale {
  M scale;
  bool scaled;

  FASTOPT_HD M operator()(M grad) const {
    return scaled ? unscale_grad<true>(grad, scale) : unscale_grad<false>(grad, scale);
  }
};

// The loss scale of a call: the host's number, or a device number read when the kernel runs. A
// device scale always divides (x / 1 is x exactly, so a device scale of 1 changes no bit either).
struct GradScaleSource {
  double host = 1.0;
  NumberRef device;

  template <typename M>
  FASTOPT_HD GradUnscale<M> resolve() const {
    if (device) return {M(device.read()), true};
    return {M(host), host != 1.0};
  }
};

// The device values of one update call, each unset (nullptr) or a pointer into device memory.
struct DeviceValues {
  NumberRef lr;         // float32 / float64: replaces the host lr
  NumberRef step;       // int32 / int64 / float32 / float64: replaces the host step
  NumberRef found_inf;  // any of the four: the update writes nothing when it is not zero

  // Whether the per-call constants must be computed on the device (lr or step live there).
  FASTOPT_HD bool any() const { return bool(lr) || bool(step); }

  FASTOPT_HD bool found_inf_set() const { return found_inf && found_inf.read() != 0.0; }

  // The hyperparameters with the device values in place of the host ones.
  template <typename Hyper>
  FASTOPT_HD Hyper with_lr_step(Hyper h) const {
    if (lr) h.lr = lr.read();
    if (step) h.step = step.read_integer();
    return h;
  }
  FASTOPT_HD RmspropHyper with_lr_step(RmspropHyper h) const {  // RMSprop has no step
    if (lr) h.lr = lr.read();
    return h;
  }
};

}  // namespace fastopt::cuda
