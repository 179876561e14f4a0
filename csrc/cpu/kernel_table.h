// The CPU kernels, compiled once per instruction set (kernels_for_isa.cpp) and reached through a
// table of function pointers chosen at import from the CPU's features (dispatch.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common/dtype.h"
#include "cpu/adafactor_tensor.h"
#include "cpu/bf16_call.h"
#include "cpu/adam_int8_call.h"
#include "cpu/int8_state_call.h"
#include "cpu/loss_args.h"
#include "cpu/tensor_list.h"
#include "fastopt/adafactor.h"
#include "fastopt/fastopt.h"
#include "fastopt/registry.h"

namespace fastopt::cpu {

// The update of a rule (fastopt/rule.h) over its operands; returns found_inf.
template <typename T, typename Rule>
using RuleFn = bool (*)(const TensorList<T, Rule::kOperands>&, const typename Rule::Hyper&);

// The update of a rule over bfloat16 storage (rule_bf16_loops.h); returns found_inf. nullptr for a rule
// with per-tensor sums (LAMB), which has no such loop.
template <typename Rule>
using RuleBf16Fn = bool (*)(const Bf16Call&, const typename Rule::Hyper&);

// The update of a rule over 8-bit blockwise state (rule_int8_loops.h); returns found_inf. nullptr for a
// rule with per-tensor sums (LAMB) or without state (Muon's apply pass).
template <typename Rule>
using RuleInt8Fn = bool (*)(const Int8StateCall&, const typename Rule::Hyper&);

// Position of Rule in a RuleList.
template <typename Rule, typename... Rules>
constexpr size_t rule_index(RuleList<Rules...>) {
  size_t i = 0, found = sizeof...(Rules);
  ((std::is_same_v<Rule, Rules> ? (found = i, ++i) : ++i), ...);
  return found;
}

// One function per registered rule, of type Fn<Rule>.
template <template <typename> class Fn, typename List>
struct PerRule;

template <template <typename> class Fn, typename... Rules>
struct PerRule<Fn, RuleList<Rules...>> {
  std::tuple<Fn<Rules>...> fns;

  template <typename Rule>
  Fn<Rule> of() const {
    constexpr size_t i = rule_index<Rule>(RuleList<Rules...>{});
    static_assert(i < sizeof...(Rules), "the rule is not in fastopt::Registry (registry.h)");
    return std::get<i>(fns);
  }
};

// The table of Fn over every rule of a list: entry(static_cast<Rule*>(nullptr)) for each (the per-set
// table files: entry a generic lambda naming that set's function of the rule).
template <template <typename> class Fn, typename... Rules, typename Entry>
PerRule<Fn, RuleList<Rules...>> per_rule(RuleList<Rules...>, Entry&& entry) {
  return {{entry(static_cast<Rules*>(nullptr))...}};
}

template <typename T>
struct RuleFnOf {
  template <typename Rule>
  using type = RuleFn<T, Rule>;
};

// The updates of every registered rule over arrays of T, over bfloat16 storage and over 8-bit state.
template <typename T, typename List>
using RuleTable = PerRule<RuleFnOf<T>::template type, List>;
template <typename List>
using RuleBf16Table = PerRule<RuleBf16Fn, List>;
template <typename List>
using RuleInt8Table = PerRule<RuleInt8Fn, List>;

template <typename T>
struct TypedKernels {
  // The updates return found_inf: true when hyper.scaling.skip_nonfinite found a NaN/Inf gradient
  // and nothing was written (always false without skip_nonfinite).
  // {param, grad, momentum_buffer} / {param, grad, state_sum}
  bool (*sgd)(const TensorList<T, 3>&, const SgdHyper&);
  bool (*adagrad)(const TensorList<T, 3>&, const AdagradHyper&);
  // {param, grad, square_avg, momentum_buffer, grad_avg}
  bool (*rmsprop)(const TensorList<T, 5>&, const RmspropHyper&);
  // {param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq}; hyper.decoupled selects AdamW
  bool (*adam)(const TensorList<T, 5>&, const AdamHyper&);
  // Write the gradient (and per-row losses) and return the reduced loss.
  double (*cross_entropy_i32)(const CrossEntropyArgs<T, int32_t>&);
  double (*cross_entropy_i64)(const CrossEntropyArgs<T, int64_t>&);
  double (*svm_i32)(const HingeArgs<T, int32_t>&);
  double (*svm_i64)(const HingeArgs<T, int64_t>&);
  // out = softmax(x) or log_softmax(x) over rows of length c (out is x itself or does not overlap it)
  void (*softmax)(const T* x, T* out, int64_t rows, int64_t c, bool log);
  // l1 * sum|w| + l2 * sum w^2; adds the gradient into grad unless it is nullptr
  double (*penalty)(const T* w, T* grad, int64_t n, double l1, double l2);
  // out = exp(x) element-wise with the kernels' own exp (exposed for its accuracy test)
  void (*exp)(const T* x, T* out, int64_t n);
  // a += b: the bandwidth probe of the benchmarks (reads two arrays, writes one), same threading
  void (*probe_add)(T* a, const T* b, int64_t n);
  // found_inf alone: any grad / grad_scale NaN or Inf, over {unused, grad} (the pre-pass of the updates)
  bool (*nonfinite)(const TensorList<T, 2>&, double grad_scale);
  // Adafactor (fastopt/adafactor.h): not element-wise (row/column sums), so its own loops
  void (*adafactor)(const std::vector<AdafactorTensor<T>>&, const AdafactorHyper&);
  // The optimizers described as rules (fastopt/registry.h): rules.of<LionRule>()(list, hyper)
  RuleTable<T, Registry> rules;

  double cross_entropy(const CrossEntropyArgs<T, int32_t>& a) const { return cross_entropy_i32(a); }
  double cross_entropy(const CrossEntropyArgs<T, int64_t>& a) const { return cross_entropy_i64(a); }
  double svm(const HingeArgs<T, int32_t>& a) const { return svm_i32(a); }
  double svm(const HingeArgs<T, int64_t>& a) const { return svm_i64(a); }
};

// The classic four over half-precision params and grads on the CPU (float16 or bfloat16, one table
// each), with float32 state and float32 math (optim_loops.h, storage.h). Operands as in TypedKernels,
// as void pointers: the params' storage is the table's, the state's float.
struct HalfKernels {
  bool (*sgd)(const TensorList<void, 3>&, const SgdHyper&);
  bool (*adagrad)(const TensorList<void, 3>&, const AdagradHyper&);
  bool (*rmsprop)(const TensorList<void, 5>&, const RmspropHyper&);
  bool (*adam)(const TensorList<void, 5>&, const AdamHyper&);
  // the found_inf pre-pass alone over the grads (operand 1; operand 0 unused), unscaled in float32
  bool (*nonfinite)(const TensorList<void, 2>&, double grad_scale);
};

struct KernelTable {
  const char* isa;  // "avx512", "avx2", "baseline"
  TypedKernels<float> f32;
  TypedKernels<double> f64;
  // Adam/AdamW with bfloat16 params and/or state (adam_bf16_loops.h); returns found_inf
  bool (*adam_bf16)(const Bf16Call&, const AdamHyper&);
  // SGD, Adagrad and RMSprop with bfloat16 state and/or stochastically rounded bfloat16 params
  // (bf16_state_loops.h); return found_inf
  bool (*sgd_bf16)(const Bf16Call&, const SgdHyper&);
  bool (*adagrad_bf16)(const Bf16Call&, const AdagradHyper&);
  bool (*rmsprop_bf16)(const Bf16Call&, const RmspropHyper&);
  // Every element-wise rule with bfloat16 state and/or params (rule_bf16_loops.h): rules_bf16.of<LionRule>()
  RuleBf16Table<Registry> rules_bf16;
  // Adam/AdamW with 8-bit blockwise state (adam_int8_loops.h); returns found_inf
  bool (*adam_int8)(const Int8AdamCall&, const AdamHyper&);
  // SGD (with momentum), Adagrad and RMSprop with 8-bit blockwise state (int8_state_loops.h); return found_inf
  bool (*sgd_int8)(const Int8StateCall&, const SgdHyper&);
  bool (*adagrad_int8)(const Int8StateCall&, const AdagradHyper&);
  bool (*rmsprop_int8)(const Int8StateCall&, const RmspropHyper&);
  // Every element-wise rule with 8-bit blockwise state (rule_int8_loops.h): rules_int8.of<LionRule>()
  RuleInt8Table<Registry> rules_int8;
  // blockwise 8-bit quantisation of one float32 array, and back (fastopt/quant8.h)
  void (*quantize8)(const Quant8Call&);
  void (*dequantize8)(const Quant8Call&);
  HalfKernels f16;   // float16 params and grads
  HalfKernels bf16;  // bfloat16 params and grads

  template <typename T>
  const TypedKernels<T>& of() const {
    if constexpr (std::is_same_v<T, float>) {
      return f32;
    } else {
      return f64;
    }
  }

  // The half kernels of `param` (float16 or bfloat16).
  const HalfKernels& half(DType param) const { return param == DType::BFloat16 ? bf16 : f16; }
};

// The table in use: the best instruction set this CPU supports, unless use_isa() chose another.
const KernelTable& kernels();

// Instruction sets compiled into this build, best first, and those this CPU can run.
std::vector<std::string> compiled_isas();
std::vector<std::string> supported_isas();

// Switches to the best supported instruction set at or below `name`; returns the one chosen.
// Throws std::invalid_argument for a name that is not one of compiled_isas().
std::string use_isa(const std::string& name);

}  // namespace fastopt::cpu
