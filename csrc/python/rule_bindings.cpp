// The Python functions of every optimizer described as a rule (fastopt/registry.h): fastopt.<name>_,
// with the signature, the checks and the docstring produced from the rule's description.
//
//   <name>_(params, grads, <state>..., *, <hyper>=<default>..., step[=None], stochastic_rounding=False,
//           seed=0, grad_scale=1.0, skip_nonfinite=False, found_inf=None, stream=None)
//
// State operands a variant does not use default to None (and are not read); the others are required.
// step is required where the rule reads it; elsewhere it is optional and read by stochastic rounding
// only. bfloat16 state, bfloat16 params or stochastic_rounding send an element-wise rule's call to its
// loop over bfloat16 storage on the CPU (bf16_call.h, rule_bf16_loops.h); fastopt.QuantizedState state to
// its loop over 8-bit state (int8_call.h, rule_int8_loops.h).
#include <pybind11/pybind11.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string_view>
#include <optional>
#include <string>
#include <vector>

#include "common/rule_checks.h"
#include "cpu/kernel_table.h"
#include "python/bf16_call.h"
#include "python/int8_call.h"
#include "python/update_call.h"

namespace fastopt::bindings {

namespace {

template <typename Rule>
struct RuleBinding {
  static inline const Signature* signature = nullptr;

  static Signature* make_signature() {
    using P = Signature::Param;
    std::vector<P> params;
    for (const OperandSpec& op : Rule::kOperandSpecs) {
      params.push_back(P{op.name, op.needed_when == nullptr ? py::object() : py::object(py::none())});
    }
    for (const HyperSpec& h : Rule::kHyperSpecs) {
      const py::object value = h.rule == HyperRule::Flag ? py::object(py::bool_(h.default_value != 0.0))
                               : is_optional(h.rule)    ? py::object(py::none())
                                                        : py::object(py::float_(h.default_value));
      params.push_back(P{h.name, value});
    }
    params.push_back(P{"step", Rule::kUsesStep ? py::object() : py::object(py::none())});
    params.push_back(P{"stochastic_rounding", py::bool_(false)});
    params.push_back(P{"seed", py::int_(0)});
    params.push_back(P{"grad_scale", py::float_(1.0)});
    params.push_back(P{"skip_nonfinite", py::bool_(false)});
    params.push_back(P{"found_inf", py::none()});
    params.push_back(P{"stream", py::none()});
    const std::string name = std::string(Rule::kName) + "_";
    static const std::string stored = name;  // (one per rule: the template is instantiated per rule)
    return new Signature(stored.c_str(), size_t(Rule::kOperands), std::move(params));
  }

  // The state operands the rule never makes negative, for the docstring ("none" when there are none).
  static std::string non_negative_names() {
    std::string names;
    for (const OperandSpec& op : Rule::kOperandSpecs) {
      if (op.non_negative) names += (names.empty() ? "" : ", ") + std::string(op.name);
    }
    return names.empty() ? "none" : names;
  }

  static std::string doc() {
    std::string text = std::string(Rule::kSummary) + "\n\n";
    for (const HyperSpec& h : Rule::kHyperSpecs) {
      char value[32];
      std::snprintf(value, sizeof value, "%g", h.default_value);
      const std::string shown = h.rule == HyperRule::Flag ? (h.default_value != 0.0 ? "True" : "False")
                                : is_optional(h.rule)    ? "None"
                                                         : value;
      text += std::string("  ") + h.name + " (" + shown + "): " + h.doc + "\n";
    }
    for (const OperandSpec& op : Rule::kOperandSpecs) {
      if (op.needed_when != nullptr) text += std::string("  ") + op.name + ": required when " + op.needed_when + "\n";
    }
    text += Rule::kUsesStep ? "  step: the 1-based number of this update\n"
                            : "  step (None): the 1-based number of this update, needed by stochastic_rounding only\n";
    if constexpr (has_tensor_sums<Rule>) {
      text += "  stochastic_rounding, seed: for bfloat16 storage, which this optimizer does not take yet\n";
    } else {
      text += "  stochastic_rounding (False), seed (0): bfloat16 state (float32 or bfloat16 params) or bfloat16\n"
              "    params (float32 state) are updated in float32, as the float32 kernel, and each bfloat16 value\n"
              "    written is rounded to nearest-even, or stochastically with bits from (seed, step, tensor,\n"
              "    operand, element): the same bits for every thread count and instruction set. CPU only.\n";
      if constexpr (Rule::kOperands > 2) {
        text += "  8-bit state: every state argument a list of fastopt.QuantizedState (blockwise, bitsandbytes'\n"
                "    layout) with float32 params on the CPU; the update runs in float32 between reading the codes\n"
                "    back and quantising them again. Signed map, or either one for " + non_negative_names() + ".\n";
      }
    }
    return text + "\n" + kListNote;
  }

  static bool update(py::handle (&operands)[Rule::kOperands], const Scalar& lr, const double* values,
                     const Scalar& step, bool stochastic_rounding, uint64_t seed, const Scaling& scaling,
                     CallDevice& call) {
    using Hyper = typename Rule::Hyper;
    const Hyper hyper = Rule::from_values(values, step.host_step(), scaling.host);
    require(rules::check_rule<Rule>(values, hyper));
    if (lr.device && !Rule::kDeviceLr) {
      throw py::type_error(std::string(Rule::kName) + "_() needs lr as a host number (its constants are computed "
                           "from it on the host)");
    }
    if (step.device && !Rule::kDeviceStep) {
      throw py::type_error(std::string(Rule::kName) + "_() needs step as a host number (its constants are not "
                           "computed from a device step)");
    }
    unsigned used = 0;
    with_variant<Rule::kVariants>(Rule::variant(hyper), [&](auto V) { used = Rule::used(V.value); });
    const ArrayArg p = take_arrays(operands[0], Rule::kOperandSpecs[0].name, true, call);
    const ArrayArg g = take_arrays(operands[1], Rule::kOperandSpecs[1].name, false, call);
    if (any_quantized(operands)) {  // int8_call.h: 8-bit state, CPU
      const DeviceScalars device{lr, step, scaling, call};
      return update_int8(operands, used, p, g, hyper, values, stochastic_rounding, device, call);
    }
    std::array<std::optional<ArrayArg>, Rule::kOperands> states;
    std::array<const ArrayArg*, Rule::kOperands - 1> others{};
    others[0] = &g;
    for (int j = 2; j < Rule::kOperands; ++j) {
      const OperandSpec& op = Rule::kOperandSpecs[j];
      if (op.needed_when == nullptr) {
        states[j] = take_arrays(operands[j], op.name, true, call);
      } else {
        states[j] = take_state(operands[j], op.name, (used & operand_bit(j)) != 0, op.needed_when, call);
      }
      others[j - 1] = ptr(states[j]);
    }
    const DeviceScalars device{lr, step, scaling, call};
    auto range = [&](const rules::MathRange& r) { return rules::check_rule_range<Rule>(values, hyper, r); };
    std::vector<const ArrayArg*> state;
    for (int j = 2; j < Rule::kOperands; ++j) state.push_back(ptr(states[j]));
    if (bfloat16_call(state, stochastic_rounding) || bfloat16_params_on_cpu(p)) {  // bf16_call.h: bfloat16 storage, CPU
      const auto kernel = cpu::kernels().rules_bf16.template of<Rule>();
      if (kernel == nullptr) {
        throw py::type_error(std::string(Rule::kName) + "_() takes float32 or float64 arrays only: its per-tensor "
                             "sums have no loop over bfloat16 storage yet (bfloat16 params or state, "
                             "stochastic_rounding)");
      }
      return run_bf16(
          p, g, state, stochastic_rounding, seed, uint64_t(step.host_step()), device.skip_now,
          [&] { require(range(rules::math_range(false))); },
          [&](const cpu::Bf16Call& c) { return kernel(c, hyper); });
    }
    return run_update<Rule::kOperands>(
        p, others, range, device.skip_now, call,
        [&](const auto& list) { return kernels_for(list).rules.template of<Rule>()(list, hyper); },
        [&](const auto& list, const cuda::Queue& queue) {
          return cuda::rule_update<Rule>(list, hyper, device.hyper, queue);
        });
  }

  static bool any_quantized(py::handle (&operands)[Rule::kOperands]) {
    for (int j = 2; j < Rule::kOperands; ++j) {
      if (quantized_state(operands[j])) return true;
    }
    return false;
  }

  // The call with 8-bit state (fastopt.QuantizedState): every state operand the variant uses in 8 bits,
  // in the signed map, or either map where the rule declares it non_negative.
  static bool update_int8(py::handle (&operands)[Rule::kOperands], unsigned used, const ArrayArg& p,
                          const ArrayArg& g, const typename Rule::Hyper& hyper, const double* values,
                          bool stochastic_rounding, const DeviceScalars& device, CallDevice& call) {
    const auto kernel = cpu::kernels().rules_int8.template of<Rule>();
    if (kernel == nullptr) {
      throw py::type_error(std::string(Rule::kName) + "_() takes no fastopt.QuantizedState: " +
                           (has_tensor_sums<Rule> ? "its per-tensor sums have no loop over 8-bit state yet"
                                                  : "it keeps no state"));
    }
    refuse_rounding_of_codes(stochastic_rounding);
    std::vector<Int8Slot> slots;
    for (int j = 2; j < Rule::kOperands; ++j) {
      const OperandSpec& op = Rule::kOperandSpecs[j];
      const bool in_use = (used & operand_bit(j)) != 0;
      slots.push_back(Int8Slot{operands[j], in_use ? op.name : nullptr,
                               op.non_negative ? StateMap::Either : StateMap::Signed});
    }
    return run_int8_state(
        p, g, slots, device.skip_now, call,
        [&] { require(rules::check_rule_range<Rule>(values, hyper, rules::math_range(false))); },
        [&](const cpu::Int8StateCall& c) { return kernel(c, hyper); });
  }

  static PyObject* call(PyObject*, PyObject* const* args, Py_ssize_t nargsf, PyObject* kwnames) {
    return guarded([&] {
      BoundArgs a = signature->bind(args, size_t(nargsf), kwnames);
      py::handle operands[Rule::kOperands];
      for (auto& op : operands) op = a.next();
      double values[Rule::kHypers];
      Scalar lr;
      for (int i = 0; i < Rule::kHypers; ++i) {
        const HyperSpec& h = Rule::kHyperSpecs[i];
        if (i == 0 && std::string_view(h.name) == "lr") {  // a host number, or a 0-d device array
          lr = next_lr(a);
          values[i] = lr.value;
        } else if (h.rule == HyperRule::Flag) {
          values[i] = a.next_bool() ? 1.0 : 0.0;
        } else if (is_optional(h.rule) && a.peek().is_none()) {
          a.next();
          values[i] = std::numeric_limits<double>::quiet_NaN();
        } else {
          values[i] = a.next_real();
          if (is_optional(h.rule) && std::isnan(values[i])) {  // (NaN stands for None inside)
            throw py::value_error(std::string(h.name) + " must be a finite number or None, got nan");
          }
        }
      }
      const bool step_given = !a.peek().is_none();
      const Scalar step = Rule::kUsesStep || step_given ? next_step(a) : (a.next(), Scalar{0.0, 1, {}});
      const bool stochastic_rounding = a.next_bool();
      const uint64_t seed = seed_arg(a.next());
      if (step_given && !Rule::kUsesStep) require(rules::step(step.host_step()));  // (read by the rounding only)
      if (stochastic_rounding && !step_given) {
        throw py::type_error(std::string(Rule::kName) + "_(stochastic_rounding=True) needs step: pass step=t, the "
                             "1-based number of this update, so that each update draws new rounding bits");
      }
      const Scaling scaling = next_checked_scaling(a);
      CallDevice device(a.next());
      return boolean(update(operands, lr, values, step, stochastic_rounding, seed, scaling, device));
    });
  }
};

// The name Python sees for a HyperRule (fastopt._core._rule_registry()).
const char* hyper_rule_name(HyperRule r) {
  switch (r) {
    case HyperRule::Finite: return "finite";
    case HyperRule::NonNegative: return "non_negative";
    case HyperRule::Positive: return "positive";
    case HyperRule::UnitInterval: return "unit_interval";
    case HyperRule::ClosedUnit: return "closed_unit";
    case HyperRule::AtLeastOne: return "at_least_one";
    case HyperRule::Flag: return "flag";
    case HyperRule::OptionalUnit: return "optional_unit";
    case HyperRule::OptionalNonNegative: return "optional_non_negative";
  }
  return "unknown";
}

// One rule's description as Python data, for tests and tools that are generated from the registry
// (the property tests' strategies, the benchmark's rows) rather than from a hand-kept list.
template <typename Rule>
py::dict describe_rule() {
  py::list operands, hypers, non_negative;
  for (const OperandSpec& op : Rule::kOperandSpecs) {
    operands.append(py::make_tuple(op.name, op.needed_when == nullptr ? py::object(py::none())
                                                                        : py::object(py::str(op.needed_when))));
    if (op.non_negative) non_negative.append(op.name);
  }
  for (const HyperSpec& h : Rule::kHyperSpecs) {
    const py::object value = h.rule == HyperRule::Flag ? py::object(py::bool_(h.default_value != 0.0))
                             : is_optional(h.rule)    ? py::object(py::none())
                                                      : py::object(py::float_(h.default_value));
    hypers.append(py::make_tuple(h.name, hyper_rule_name(h.rule), value, h.doc));
  }
  py::dict d;
  d["name"] = Rule::kName;
  d["function"] = std::string(Rule::kName) + "_";
  d["summary"] = Rule::kSummary;
  d["operands"] = py::tuple(operands);
  d["hypers"] = py::tuple(hypers);
  d["takes_step"] = bool(Rule::kUsesStep);
  d["tensor_sums"] = bool(has_tensor_sums<Rule>);  // a second pass over the tensor (LAMB's norms)
  d["non_negative"] = py::tuple(non_negative);  // states never negative: either 8-bit map (else the signed one)
  d["int8_state"] = cpu::kernels().rules_int8.template of<Rule>() != nullptr;  // takes fastopt.QuantizedState
  return d;
}

}  // namespace

void bind_rules(py::module_& m) {
  for_each_rule(Registry{}, [&](auto* rule) {
    using Rule = std::remove_pointer_t<decltype(rule)>;
    RuleBinding<Rule>::signature = RuleBinding<Rule>::make_signature();
    def_fast(m, *RuleBinding<Rule>::signature, &RuleBinding<Rule>::call, RuleBinding<Rule>::doc());
  });
  m.def(
      "_rule_registry",
      [] {
        py::list rules;
        for_each_rule(Registry{}, [&](auto* rule) { rules.append(describe_rule<std::remove_pointer_t<decltype(rule)>>()); });
        return py::tuple(rules);
      },
      "Every optimizer described as a rule (csrc/include/fastopt/registry.h), in registry order: a dict each "
      "with name, function, summary, operands ((name, needed_when or None), ...), hypers ((name, rule, default, "
      "doc), ...: rule one of finite, non_negative, positive, unit_interval, closed_unit, at_least_one, flag, "
      "optional_unit, optional_non_negative; default None for the optional ones), takes_step, tensor_sums, "
      "non_negative (the state operands the rule never makes negative: their 8-bit form takes either map, the "
      "others the signed one) and int8_state (the rule takes fastopt.QuantizedState state).");
}

}  // namespace fastopt::bindings
