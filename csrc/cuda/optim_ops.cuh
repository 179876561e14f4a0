// The optimizer updates as multi-tensor ops (the interface is described in multi_tensor.cuh): each
// holds its per-call constants and flags, and apply() calls the shared per-element rule of
// fastopt/*.h with exactly the arguments of the CPU loops (cpu/optim_loops.h):
//   rule<flags>(p, unscale_grad<SCALED>(g, grad_scale), state..., scalars)
// so that, with -fmad=false, float32 and float64 updates give the CPU's bits.
//
// Template flags are kept for what changes memory traffic (which state operands exist: SGD's
// momentum, RMSprop's centered and momentum, AMSGrad); the rest (nesterov, AdamW's decoupled decay,
// grad_scale != 1, SGD's first step) are uniform runtime branches, which keeps the kernel count
// (and compile time) down. The branches are uniform over the whole launch, so warps never diverge.
#pragma once

#include <cstdint>

#include "common/dtype.h"
#include "cuda/backend.h"
#include "fastopt/fastopt.h"
#include "fastopt/macros.h"

namespace fastopt::cuda {

// lr and step read on the device (DeviceHyper), as plain pointers and dtypes in the kernel argument.
struct DeviceValues {
  const void* lr = nullptr;  // float32 / float64
  const void* step = nullptr;  // int32 / int64 / float32 / float64
  DType lr_dtype = DType::Float32;
  DType step_dtype = DType::Int64;

  FASTOPT_HD bool any() const { return lr != nullptr || step != nullptr; }

  FASTOPT_HD double read_lr() const {
    return lr_dtype == DType::Float64 ? *static_cast<const double*>(lr) : double(*static_cast<const float*>(lr));
  }
  // A floating step (torch keeps its capturable steps as float32 tensors) holds an integer:
  // converted by truncation.
  FASTOPT_HD int64_t read_step() const {
    switch (step_dtype) {
      case DType::Int32: return int64_t(*static_cast<const int32_t*>(step));
      case DType::Float32: return int64_t(*static_cast<const float*>(step));
      case DType::Float64: return int64_t(*static_cast<const double*>(step));
      default: return *static_cast<const int64_t*>(step);
    }
  }

  // The hyperparameters with the device values in place of the host ones.
  template <typename Hyper>
  FASTOPT_HD Hyper with_lr_step(Hyper h) const {
    if (lr != nullptr) h.lr = read_lr();
    if (step != nullptr) h.step = read_step();
    return h;
  }
  FASTOPT_HD RmspropHyper with_lr_step(RmspropHyper h) const {  // RMSprop has no step
    if (lr != nullptr) h.lr = read_lr();
    return h;
  }
};

// What every op shares: the device values and the gradient's unscaling.
template <typename M>
struct OpBase {
  DeviceValues device;
  M grad_scale;  // M(hyper.scaling.grad_scale), as the CPU's T(grad_scale)
  bool scaled;   // grad_scale != 1

  FASTOPT_HD bool on_device() const { return device.any(); }
  FASTOPT_HD M unscaled(M grad) const {
    return scaled ? unscale_grad<true>(grad, grad_scale) : unscale_grad<false>(grad, grad_scale);
  }
};

// ---------------------------------------------------------------- SGD {param, grad, momentum_buffer}

template <typename M>
struct SgdConsts {
  SgdScalars<M> s;
  bool first;  // momentum != 0 and step == 1: the buffer starts as the gradient (and is not read)
};

template <typename M, bool MOMENTUM>
struct SgdOp : OpBase<M> {
  static constexpr int kOperands = 3;
  static constexpr unsigned kUsed = MOMENTUM ? 0b111u : 0b011u;
  static constexpr unsigned kWritten = kUsed & ~0b010u;
  using Consts = SgdConsts<M>;

  SgdHyper hyper;
  Consts consts;
  bool nesterov;  // momentum != 0 and nesterov

  static FASTOPT_HD Consts make_consts(const SgdHyper& h) {
    return {sgd_scalars<M>(h), h.momentum != 0.0 && h.step == 1};
  }
  FASTOPT_HD Consts device_consts() const { return make_consts(this->device.with_lr_step(hyper)); }
  FASTOPT_HD unsigned read_mask(const Consts& c) const { return c.first ? kUsed & ~0b100u : kUsed; }

  FASTOPT_HD void apply(const Consts& c, M (&e)[3]) const {
    const M g = this->unscaled(e[1]);
    if constexpr (MOMENTUM) {
      if (c.first) {
        if (nesterov) {
          sgd_update<true, true, true>(e[0], g, e[2], c.s);
        } else {
          sgd_update<true, false, true>(e[0], g, e[2], c.s);
        }
      } else {
        if (nesterov) {
          sgd_update<true, true, false>(e[0], g, e[2], c.s);
        } else {
          sgd_update<true, false, false>(e[0], g, e[2], c.s);
        }
      }
    } else {
      sgd_update<false, false, false>(e[0], g, e[2], c.s);
    }
  }
};

// ---------------------------------------------------------------- Adagrad {param, grad, state_sum}

template <typename M>
struct AdagradOp : OpBase<M> {
  static constexpr int kOperands = 3;
  static constexpr unsigned kUsed = 0b111u;
  static constexpr unsigned kWritten = 0b101u;
  using Consts = AdagradScalars<M>;

  AdagradHyper hyper;
  Consts consts;

  static FASTOPT_HD Consts make_consts(const AdagradHyper& h) { return adagrad_scalars<M>(h); }
  FASTOPT_HD Consts device_consts() const { return make_consts(this->device.with_lr_step(hyper)); }
  FASTOPT_HD unsigned read_mask(const Consts&) const { return kUsed; }

  FASTOPT_HD void apply(const Consts& c, M (&e)[3]) const { adagrad_update(e[0], this->unscaled(e[1]), e[2], c); }
};

// ---------------------------------------------------------------- RMSprop {param, grad, square_avg, momentum_buffer, grad_avg}

template <typename M, bool CENTERED, bool MOMENTUM>
struct RmspropOp : OpBase<M> {
  static constexpr int kOperands = 5;
  static constexpr unsigned kUsed = 0b00111u | (MOMENTUM ? 0b01000u : 0u) | (CENTERED ? 0b10000u : 0u);
  static constexpr unsigned kWritten = kUsed & ~0b00010u;
  using Consts = RmspropScalars<M>;

  RmspropHyper hyper;
  Consts consts;

  static FASTOPT_HD Consts make_consts(const RmspropHyper& h) { return rmsprop_scalars<M>(h); }
  FASTOPT_HD Consts device_consts() const { return make_consts(this->device.with_lr_step(hyper)); }
  FASTOPT_HD unsigned read_mask(const Consts&) const { return kUsed; }

  FASTOPT_HD void apply(const Consts& c, M (&e)[5]) const {
    rmsprop_update<CENTERED, MOMENTUM>(e[0], this->unscaled(e[1]), e[2], e[3], e[4], c);
  }
};

// ---------------------------------------------------------------- Adam / AdamW {param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq}

template <typename M, bool AMSGRAD>
struct AdamOp : OpBase<M> {
  static constexpr int kOperands = 5;
  static constexpr unsigned kUsed = AMSGRAD ? 0b11111u : 0b01111u;
  static constexpr unsigned kWritten = kUsed & ~0b00010u;
  using Consts = AdamScalars<M>;

  AdamHyper hyper;
  Consts consts;
  bool decoupled;  // AdamW

  static FASTOPT_HD Consts make_consts(const AdamHyper& h) { return adam_scalars<M>(h); }
  FASTOPT_HD Consts device_consts() const { return make_consts(this->device.with_lr_step(hyper)); }
  FASTOPT_HD unsigned read_mask(const Consts&) const { return kUsed; }

  FASTOPT_HD void apply(const Consts& c, M (&e)[5]) const {
    const M g = this->unscaled(e[1]);
    if (decoupled) {
      adam_update<AMSGRAD, true>(e[0], g, e[2], e[3], e[4], c);
    } else {
      adam_update<AMSGRAD, false>(e[0], g, e[2], e[3], e[4], c);
    }
  }
};

}  // namespace fastopt::cuda
