// The optimizer updates as multi-tensor ops (the interface is described in multi_tensor.cuh): each
// holds its per-call constants and flags, and apply() calls the shared per-element rule of
// fastopt/*.h with exactly the arguments of the CPU loops (cpu/optim_loops.h):
//   rule<flags>(p, unscale_grad<SCALED>(g, grad_scale), state..., scalars)
// (update_chunk unscales the gradient operand before apply() sees it: OpBase::unscale()).
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
#include "cuda/device_scalars.cuh"
#include "fastopt/fastopt.h"
#include "fastopt/macros.h"

namespace fastopt::cuda {

// What every op shares: the device values, the loss scale, and the interface's flag and unscaling.
template <typename M>
struct OpBase {
  using Math = M;
  DeviceValues device;
  double grad_scale;  // hyper.scaling.grad_scale (the CPU divides by T(grad_scale)); unused with a device scale
  NumberRef device_grad_scale;

  FASTOPT_HD bool on_device() const { return device.any(); }
  FASTOPT_HD bool skipped() const { return device.found_inf_set(); }
  FASTOPT_HD GradUnscale<M> unscale() const {
    return GradScaleSource{grad_scale, device_grad_scale}.template resolve<M>();
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
    const M g = e[1];
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

  FASTOPT_HD void apply(const Consts& c, M (&e)[3]) const { adagrad_update(e[0], e[1], e[2], c); }
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
    rmsprop_update<CENTERED, MOMENTUM>(e[0], e[1], e[2], e[3], e[4], c);
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
  bool decoupled;  // AdamW's form (adam_decoupled_form: AdamW, or Adam without weight decay)

  static FASTOPT_HD Consts make_consts(const AdamHyper& h) { return adam_scalars<M>(h); }
  FASTOPT_HD Consts device_consts() const { return make_consts(this->device.with_lr_step(hyper)); }
  FASTOPT_HD unsigned read_mask(const Consts&) const { return kUsed; }

  FASTOPT_HD void apply(const Consts& c, M (&e)[5]) const {
    const M g = e[1];
    if (decoupled) {
      adam_update<AMSGRAD, true>(e[0], g, e[2], e[3], e[4], c);
    } else {
      adam_update<AMSGRAD, false>(e[0], g, e[2], e[3], e[4], c);
    }
  }
};

}  // namespace fastopt::cuda
