// XLA FFI handlers of the optimizers described as rules (fastopt/registry.h): one target per rule,
// "fastopt_rule_<name>" (fastopt_rule_lion, ...), produced from the registry as the C ABI's generic
// entries are, so a newly registered rule needs nothing here. On the CPU, through the same kernel table
// entries as fastopt.lion_ & co.; on CUDA, through the CUDA backend's rule launch (cuda::rule_update, the
// one fastopt.lion_ & co. run on CUDA arrays), queued on XLA's stream with lr and step left on the
// device (rules with per-tensor sums, LAMB's norms, included: their passes, tensor_sum_kernels.cuh).
//
// Operands: update_operands.h (lr when an operand, step, then the rule's operands in its order, the
// optional states the configuration does not read left out). Attributes: lr (double; read when the
// rule's first hyperparameter is lr and lr_operand is false), lr_operand, tensors, and values: the
// rule's kHypers values in spec order (flags as 0 / 1, NaN for an optional one given as None), the
// same array fastopt_update takes through the C ABI.
#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "common/rule_checks.h"
#include "cpu/kernel_table.h"
#include "fastopt/registry.h"
#include "fastopt/tensor_sums.h"
#include "cuda/backend.h"
#include "jax/handlers.h"
#include "jax/host_test.h"
#include "jax/kernel_threads.h"
#include "jax/update_operands.h"
#include "jax/xla_threads.h"

namespace fastopt::jax_ffi {

namespace {

using Args = ffi::RemainingArgs;
using Rets = ffi::RemainingRets;

template <typename Rule>
constexpr bool takes_lr() {
  return std::char_traits<char>::compare(Rule::kHyperSpecs[0].name, "lr", 3) == 0;
}

// The call's values (their count checked) and its operands, in the slots the configuration's variant
// uses (the variant depends on neither lr nor step). `v` receives the values; lr's entry is left to the
// caller (the attribute or the operand, read where the platform can).
template <typename Rule>
ffi::Error read_rule_call(const std::string& what, Args& args, Rets& rets, bool lr_operand, int64_t tensors,
                          ffi::Span<const double> values, bool half_ok, std::array<double, Rule::kHypers>& v,
                          UpdateOperands<Rule::kOperands>& ops) {
  constexpr int N = Rule::kOperands;
  if (values.size() != size_t(Rule::kHypers) || (lr_operand && !takes_lr<Rule>())) {
    return ffi::Error::Internal(what + ": a call with " + std::to_string(values.size()) +
                                " values does not match the rule; fastopt.jax and fastopt._core come from "
                                "different builds?");
  }
  for (int i = 0; i < Rule::kHypers; ++i) v[size_t(i)] = values[size_t(i)];
  unsigned used = 0;
  with_variant<Rule::kVariants>(Rule::variant(Rule::from_values(v.data(), 1, GradScaling{})),
                                [&](auto V) { used = Rule::used(V.value); });
  std::array<bool, N> slots{};
  std::array<const char*, N> names{};
  for (int j = 0; j < N; ++j) {
    slots[size_t(j)] = Rule::kOperandSpecs[j].needed_when == nullptr || (used & operand_bit(j)) != 0;
    names[size_t(j)] = Rule::kOperandSpecs[j].name;
  }
  return read_update<N>(args, rets, tensors, lr_operand, slots, names, half_ok, ops);
}

// The rule's checks of its values, then of their range for the params' dtype.
template <typename Rule>
ffi::Error check_rule_call(const std::array<double, Rule::kHypers>& v, const typename Rule::Hyper& hyper,
                           DType param) {
  if (const rules::Check bad = rules::check_rule<Rule>(v.data(), hyper)) return invalid(rules::describe(*bad, show));
  if (const rules::Check bad = rules::check_rule_range<Rule>(v.data(), hyper, rules::math_range(param == DType::Float64))) {
    return invalid(rules::describe(*bad, show));
  }
  return ffi::Error::Success();
}

template <typename Rule>
ffi::Error rule_cpu(ffi::ThreadPool pool, Args args, Rets rets, double lr, bool lr_operand, int64_t tensors,
                    ffi::Span<const double> values) {
  static const std::string what = std::string("fastopt_rule_") + Rule::kName;
  return guarded(what.c_str(), [&]() -> ffi::Error {
    constexpr int N = Rule::kOperands;
    std::array<double, Rule::kHypers> v{};
    UpdateOperands<N> ops;
    if (ffi::Error e = read_rule_call<Rule>(what, args, rets, lr_operand, tensors, values, false, v, ops); !e.success()) {
      return e;
    }
    if constexpr (takes_lr<Rule>()) v[0] = ops.lr ? host_real(*ops.lr) : lr;
    const typename Rule::Hyper hyper =
        Rule::from_values(v.data(), Rule::kUsesStep ? host_integer(*ops.step) : 1, GradScaling{});
    if (ffi::Error e = check_rule_call<Rule>(v, hyper, ops.param); !e.success()) return e;
    int64_t total = 0;
    for (int64_t n : ops.sizes) total += n;
    // A rule with per-tensor sums (LAMB's norms) keeps each tensor whole on one thread (pieces of whole
    // tensors), and with a global gradient-norm clip (a pre-pass over the whole list) runs as one call.
    bool whole = false, one_call = false;
    if constexpr (has_tensor_sums<Rule>) {
      whole = true;
      one_call = Rule::clip_norm(hyper) > 0.0;
    }
    const int pieces =
        one_call ? 1 : std::min<int>(piece_count(total, pool.num_threads()), whole ? int(ops.sizes.size()) : 1 << 30);
    auto run = [&](auto zero) {
      using T = decltype(zero);
      const auto kernel = cpu::kernels().of<T>().rules.template of<Rule>();
      const cpu::TensorList<T, N> list = host_list<T>(ops);
      if (pieces <= 1) {  // (0 for an empty list of whole tensors)
        const KernelOnCallingThread one_thread;
        kernel(list, hyper);
      } else {
        run_pieces(pool, whole ? split_by_tensor(list, pieces) : split_list(list, pieces),
                   [&](const cpu::TensorList<T, N>& piece) { kernel(piece, hyper); });
      }
    };
    if (ops.param == DType::Float32) {
      run(float{});
    } else {
      run(double{});
    }
    return ffi::Error::Success();
  });
}

// CUDA: the rule's operands for the CUDA backend, queued on XLA's stream. lr (when an operand) and step
// stay on the device and are read there (the backend's capturable path: the rule's constants are made on
// the device from them), so nothing waits for the GPU; the host checks see placeholders for them (lr 0,
// step 1), as fastopt's capturable calls do. float16/bfloat16 params take float32 state.
template <typename Launcher, typename Rule>
ffi::Error rule_cuda(void* stream, int32_t device, Args args, Rets rets, double lr, bool lr_operand, int64_t tensors,
                     ffi::Span<const double> values) {
  static const std::string what = std::string("fastopt_rule_") + Rule::kName;
  return guarded(what.c_str(), [&]() -> ffi::Error {
    constexpr int N = Rule::kOperands;
    std::array<double, Rule::kHypers> v{};
    UpdateOperands<N> ops;
    if (ffi::Error e = read_rule_call<Rule>(what, args, rets, lr_operand, tensors, values, true, v, ops);
        !e.success()) {
      return e;
    }
    if constexpr (takes_lr<Rule>()) v[0] = lr_operand ? 0.0 : lr;
    const typename Rule::Hyper hyper = Rule::from_values(v.data(), 1, GradScaling{});
    if (ffi::Error e = check_rule_call<Rule>(v, hyper, ops.param); !e.success()) return e;
    const cuda::DeviceTensorList<N> list = device_list(ops);
    const cuda::DeviceHyper on_device = device_values(ops);
    Launcher::template rule<Rule>(what.c_str(), list, hyper, on_device, cuda::Queue{device, stream});
    return ffi::Error::Success();
  });
}

// The CUDA backend's rule launch (host_test.h's HostRecorder records instead, for the host tests).
struct CudaRuleLaunches {
  template <typename Rule>
  static void rule(const char*, const cuda::DeviceTensorList<Rule::kOperands>& list, const typename Rule::Hyper& h,
                   const cuda::DeviceHyper& d, const cuda::Queue& q) {
    cuda::rule_update<Rule>(list, h, d, q);
  }
};

struct RuleRecords {
  template <typename Rule>
  static void rule(const char* what, const cuda::DeviceTensorList<Rule::kOperands>& list,
                   const typename Rule::Hyper& h, const cuda::DeviceHyper& d, const cuda::Queue& q) {
    HostRecorder::update(what, list, h, d, q);
  }
};

template <typename B>
auto rule_attrs(B binding) {
  return std::move(binding)
      .RemainingArgs()
      .RemainingRets()
      .template Attr<double>("lr")
      .template Attr<bool>("lr_operand")
      .template Attr<int64_t>("tensors")
      .template Attr<ffi::Span<const double>>("values");
}

template <typename Rule>
XLA_FFI_Error* rule_cpu_handler(XLA_FFI_CallFrame* frame) {
  static auto* handler = rule_attrs(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()).To(rule_cpu<Rule>).release();
  return handler->Call(frame);
}

template <typename Rule>
XLA_FFI_Error* rule_cuda_handler(XLA_FFI_CallFrame* frame) {
  static auto* handler = rule_attrs(ffi::Ffi::Bind().Ctx<ffi::PlatformStream<void*>>().Ctx<ffi::DeviceOrdinal>())
                             .To(rule_cuda<CudaRuleLaunches, Rule>)
                             .release();
  return handler->Call(frame);
}

// The CUDA handler's code without a CUDA context, recording its launch (tests only).
template <typename Rule>
ffi::Error rule_host(Args args, Rets rets, double lr, bool lr_operand, int64_t tensors, ffi::Span<const double> values) {
  return rule_cuda<RuleRecords, Rule>(nullptr, 0, args, rets, lr, lr_operand, tensors, values);
}

template <typename Rule>
XLA_FFI_Error* rule_host_handler(XLA_FFI_CallFrame* frame) {
  static auto* handler = rule_attrs(ffi::Ffi::Bind()).To(rule_host<Rule>).release();
  return handler->Call(frame);
}

// The target names outlive the call (Target holds a const char*).
const std::vector<std::string>& rule_target_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for_each_rule(Registry{}, [&](auto* rule) {
      using Rule = std::remove_pointer_t<decltype(rule)>;
      v.push_back(std::string("fastopt_rule_") + Rule::kName);
    });
    return v;
  }();
  return names;
}

}  // namespace

std::vector<Target> rule_targets() {
  std::vector<Target> targets;
  size_t i = 0;
  for_each_rule(Registry{}, [&](auto* rule) {
    using Rule = std::remove_pointer_t<decltype(rule)>;
    targets.push_back({rule_target_names()[i++].c_str(), &rule_cpu_handler<Rule>, &rule_cuda_handler<Rule>});
  });
  return targets;
}

std::vector<Target> rule_host_test_targets() {
  std::vector<Target> targets;
  size_t i = 0;
  for_each_rule(Registry{}, [&](auto* rule) {
    using Rule = std::remove_pointer_t<decltype(rule)>;
    targets.push_back({rule_target_names()[i++].c_str(), &rule_host_handler<Rule>, nullptr});
  });
  return targets;
}

}  // namespace fastopt::jax_ffi
