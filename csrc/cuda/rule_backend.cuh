// The CUDA launch of every optimizer described as a rule (fastopt/rule.h, registry.h): one op type
// (multi_tensor.cuh's interface) over any rule and variant, and run_rule, the call written once over a
// Runner like optim_backend.cuh's (the GPU runner, or the host simulation of tests/cuda_host).
//
// The rule's variant is a template argument here as on the CPU: each variant reads and writes only
// the operands it uses, which is what sets the memory traffic. A rule with per-tensor sums (LAMB) runs
// its passes (tensor_sum_kernels.cuh) with the same op; its element-wise apply() is never instantiated.
#pragma once

#include "cuda/optim_backend.cuh"
#include "cuda/tensor_sum_kernels.cuh"
#include "fastopt/registry.h"
#include "fastopt/tensor_sums.h"

namespace fastopt::cuda {

template <typename Rule, typename M, int V>
struct RuleOp : OpBase<M> {
  static constexpr int kOperands = Rule::kOperands;
  static constexpr unsigned kUsed = Rule::used(V);
  static constexpr unsigned kWritten = kUsed & ~operand_bit(1);
  using Consts = typename Rule::template Consts<M>;

  typename Rule::Hyper hyper;
  Consts consts;

  static FASTOPT_HD Consts make_consts(const typename Rule::Hyper& h) { return Rule::template consts<M>(h); }
  FASTOPT_HD Consts device_consts() const { return make_consts(this->device.with_lr_step(hyper)); }
  FASTOPT_HD unsigned read_mask(const Consts&) const { return kUsed; }
  FASTOPT_HD void apply(const Consts& c, M (&e)[kOperands]) const { Rule::template apply<V>(c, e); }
};

// A rule with per-tensor sums (tensor_sum_kernels.cuh): the passes, after skip_nonfinite's pre-pass
// when asked for (run_update's order).
template <typename Rule, int V, typename Op, typename T, typename S, typename Runner, int N>
bool run_sum_update(Runner& runner, const DeviceTensorList<N>& list, const Op& op, const typename Rule::Hyper& hyper) {
  const double max_norm = Rule::clip_norm(hyper);
  if (!hyper.scaling.skip_nonfinite) {
    run_tensor_sums<Rule, V, Op, T, S>(runner, list, op, nullptr, max_norm);
    return false;
  }
  typename Runner::Flag found(runner);
  runner.template probe<T>(list, 1, GradScaleSource{op.grad_scale, op.device_grad_scale}, found.get());
  run_tensor_sums<Rule, V, Op, T, S>(runner, list, op, found.get(), max_norm);
  return found.read();
}

template <typename Rule, typename Runner>
bool run_rule(Runner& runner, const DeviceTensorList<Rule::kOperands>& list, const typename Rule::Hyper& hyper,
              const DeviceHyper& device_hyper) {
  using namespace detail;
  const char* name = Rule::kName;
  const int variant = Rule::variant(hyper);
  unsigned used = 0;
  with_variant<Rule::kVariants>(variant, [&](auto V) { used = Rule::used(V.value); });
  if (!prologue(runner, name, list, used, hyper.scaling)) return false;
  const DeviceValues device = device_values(name, device_hyper, Rule::kUsesStep);
  const GradScaleSource scale = grad_scale_source(name, hyper.scaling, device_hyper);
  return with_dtypes(name, list.param, list.state, [&](auto t, auto s) {
    using T = typename decltype(t)::type;
    using S = typename decltype(s)::type;
    bool found_inf = false;
    with_variant<Rule::kVariants>(variant, [&](auto V) {
      RuleOp<Rule, MathOf<T>, V.value> op;
      set_common(op, hyper, device, scale);
      if constexpr (has_tensor_sums<Rule>) {
        found_inf = run_sum_update<Rule, V.value, decltype(op), T, S>(runner, list, op, hyper);
      } else {
        found_inf = run_update<decltype(op), T, S>(runner, name, list, op, hyper.scaling);
      }
    });
    return found_inf;
  });
}

}  // namespace fastopt::cuda
