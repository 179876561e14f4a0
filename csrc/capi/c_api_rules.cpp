// The C ABI's generic entries (fastopt/c_api.h, "optimizers described as rules"): introspection and
// fastopt_update_f32/_f64, produced from fastopt::Registry (fastopt/registry.h) and each rule's
// description, so a newly registered optimizer needs nothing here. The checks are the Python
// binding's (common/rule_checks.h), the kernels the same table entries (RuleTable).
//
// Operands arrive tensor-major (operands[k * n_operands + j]): one flat array whose row per tensor is
// what a caller holding one record per parameter has at hand, one level of indirection like the
// classic list entries' pointer arrays, and the same layout for every optimizer whatever its operand
// count (which introspection gives).
#include <array>
#include <cmath>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "capi/capi_common.h"
#include "common/rule_checks.h"
#include "fastopt/c_api.h"
#include "fastopt/registry.h"

namespace fastopt::capi {

namespace {

// A registered rule's description as runtime data, for introspection and messages.
struct RuleInfo {
  const char* name;
  const char* summary;
  int n_operands;
  const OperandSpec* operands;
  int n_hyper;
  const HyperSpec* hypers;
  bool takes_step;
};

const std::vector<RuleInfo>& registered() {
  static const std::vector<RuleInfo> infos = [] {
    std::vector<RuleInfo> v;
    for_each_rule(Registry{}, [&](auto* rule) {
      using Rule = std::remove_pointer_t<decltype(rule)>;
      v.push_back({Rule::kName, Rule::kSummary, Rule::kOperands, Rule::kOperandSpecs, Rule::kHypers,
                   Rule::kHyperSpecs, Rule::kUsesStep});
    });
    return v;
  }();
  return infos;
}

// "a, b, c"
template <typename Item, typename Name>
std::string joined(const Item* items, int n, Name&& name) {
  std::string text;
  for (int i = 0; i < n; ++i) text += (i ? ", " : "") + std::string(name(items[i]));
  return text;
}

// The index of a registered rule; a clear error for anything else.
int find_rule(const char* optimizer) {
  if (optimizer == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, "optimizer is NULL"};
  const std::vector<RuleInfo>& all = registered();
  for (size_t i = 0; i < all.size(); ++i) {
    if (std::strcmp(all[i].name, optimizer) == 0) return int(i);
  }
  const std::string known = joined(all.data(), int(all.size()), [](const RuleInfo& r) { return r.name; });
  std::string message = "unknown optimizer \"" + std::string(optimizer) + "\"";
  for (const char* classic : {"sgd", "adagrad", "rmsprop", "adam", "adamw"}) {
    if (std::strcmp(classic, optimizer) == 0) {
      message += " for fastopt_update (it has its own entries: fastopt_" + std::string(classic) + "_f32, fastopt_" +
                 classic + "_list_f32 ...)";
    }
  }
  throw CError{FASTOPT_ERROR_UNKNOWN_OPTIMIZER, message + "; the registered optimizers: " + known};
}

void check_index(int32_t i, int n, const char* what, const RuleInfo& rule) {
  if (i < 0 || i >= n) {
    throw CError{FASTOPT_ERROR_SIZE, std::string(what) + " must be in [0, " + std::to_string(n) + ") for " +
                                         rule.name + ", got " + std::to_string(i)};
  }
}

template <typename Out, typename Value>
void put(Out* out, Value value) {
  if (out != nullptr) *out = value;
}

// Checks the tensor-major operand table and fills the kernels' TensorList. An operand that is not
// `required` (an optional state the call does not read) is left out, whatever its pointer.
template <typename T, int N>
cpu::TensorList<T, N> take_rows(int64_t count, const int64_t* sizes, T* const* operands,
                                const OperandSpec (&specs)[N], const std::array<bool, N>& required) {
  if (count < 0) throw CError{FASTOPT_ERROR_SIZE, "count must be >= 0, got " + std::to_string(count)};
  cpu::TensorList<T, N> list;
  if (count == 0) return list;
  if (sizes == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, "sizes is NULL"};
  if (operands == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, "operands is NULL"};
  std::vector<Span> spans;
  list.ptrs.reserve(size_t(count));
  list.sizes.reserve(size_t(count));
  for (int64_t k = 0; k < count; ++k) {
    const int64_t n = sizes[k];
    if (n < 0) {
      throw CError{FASTOPT_ERROR_SIZE, "sizes[" + std::to_string(k) + "] must be >= 0, got " + std::to_string(n)};
    }
    std::array<T*, N> row{};
    for (int j = 0; j < N; ++j) {
      if (!required[size_t(j)]) continue;
      T* p = operands[k * N + j];
      const std::string name = element_name(specs[j].name, false, k);
      if (p == nullptr && n > 0) {
        throw CError{FASTOPT_ERROR_NULL_POINTER,
                     name + " (operands[" + std::to_string(k * N + j) + "]) is NULL"};
      }
      row[size_t(j)] = p;
      if (n > 0) {
        const auto begin = reinterpret_cast<uintptr_t>(p);
        spans.push_back({begin, begin + uintptr_t(n) * sizeof(T), name, j != kGradOperand});
      }
    }
    list.add(row, n);
  }
  check_disjoint(std::move(spans));
  return list;
}

// One rule's update: the Python binding's checks in its order (grad_scale, the values against their
// rules and the rule's own check_more, then the arithmetic's range), then the arrays, then the kernel
// the Python function runs. Returns found_inf.
template <typename Rule, typename T>
bool update_rule(int64_t count, const int64_t* sizes, T* const* operands, int32_t n_operands, const double* values,
                 int32_t n_hyper, int64_t step, double grad_scale, int32_t skip_nonfinite) {
  if (n_operands != Rule::kOperands) {
    throw CError{FASTOPT_ERROR_SIZE,
                 "n_operands must be " + std::to_string(Rule::kOperands) + " for " + Rule::kName + " (" +
                     joined(Rule::kOperandSpecs, Rule::kOperands, [](const OperandSpec& o) { return o.name; }) +
                     "), got " + std::to_string(n_operands)};
  }
  if (n_hyper != Rule::kHypers) {
    throw CError{FASTOPT_ERROR_SIZE,
                 "n_hyper must be " + std::to_string(Rule::kHypers) + " for " + Rule::kName + " (" +
                     joined(Rule::kHyperSpecs, Rule::kHypers, [](const HyperSpec& h) { return h.name; }) +
                     "), got " + std::to_string(n_hyper)};
  }
  if (values == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, "hyper is NULL"};
  require(rules::positive("grad_scale", grad_scale));
  const GradScaling scaling{grad_scale, skip_nonfinite != 0};
  // (a rule without a step gets 1, as from Python, where it has no step argument)
  const typename Rule::Hyper hyper = Rule::from_values(values, Rule::kUsesStep ? step : 1, scaling);
  require(rules::check_rule<Rule>(values, hyper));
  require(rules::check_rule_range<Rule>(values, hyper, range_of<T>()));
  unsigned used = 0;
  with_variant<Rule::kVariants>(Rule::variant(hyper), [&](auto V) { used = Rule::used(V.value); });
  std::array<bool, Rule::kOperands> required{};
  for (int j = 0; j < Rule::kOperands; ++j) {
    required[size_t(j)] = Rule::kOperandSpecs[j].needed_when == nullptr || (used & operand_bit(j)) != 0;
  }
  const auto list = take_rows<T, Rule::kOperands>(count, sizes, operands, Rule::kOperandSpecs, required);
  return cpu::kernels().of<T>().rules.template of<Rule>()(list, hyper);
}

template <typename T>
int32_t update(const char* optimizer, int64_t count, const int64_t* sizes, T* const* operands, int32_t n_operands,
               const double* values, int32_t n_hyper, int64_t step, double grad_scale, int32_t skip_nonfinite,
               int32_t* found_inf) {
  return guard([&] {
    const int index = find_rule(optimizer);
    bool found = false;
    int i = 0;
    for_each_rule(Registry{}, [&](auto* rule) {
      using Rule = std::remove_pointer_t<decltype(rule)>;
      if (i++ == index) {
        found = update_rule<Rule, T>(count, sizes, operands, n_operands, values, n_hyper, step, grad_scale,
                                     skip_nonfinite);
      }
    });
    put(found_inf, found ? int32_t(1) : int32_t(0));
  });
}

}  // namespace

}  // namespace fastopt::capi

using namespace fastopt;
using namespace fastopt::capi;

extern "C" {

int32_t fastopt_optimizer_count(void) { return int32_t(registered().size()); }

const char* fastopt_optimizer_name(int32_t index) {
  const char* name = nullptr;
  guard([&] {
    const int32_t n = int32_t(registered().size());
    if (index < 0 || index >= n) {
      throw CError{FASTOPT_ERROR_SIZE,
                   "index must be in [0, " + std::to_string(n) + ") (fastopt_optimizer_count), got " +
                       std::to_string(index)};
    }
    name = registered()[size_t(index)].name;
  });
  return name;
}

int32_t fastopt_optimizer_info(const char* optimizer, int32_t* n_operands, int32_t* n_hyper, int32_t* takes_step,
                               const char** summary) {
  return guard([&] {
    const RuleInfo& rule = registered()[size_t(find_rule(optimizer))];
    put(n_operands, int32_t(rule.n_operands));
    put(n_hyper, int32_t(rule.n_hyper));
    put(takes_step, int32_t(rule.takes_step ? 1 : 0));
    put(summary, rule.summary);
  });
}

int32_t fastopt_optimizer_operand(const char* optimizer, int32_t j, const char** name, const char** needed_when) {
  return guard([&] {
    const RuleInfo& rule = registered()[size_t(find_rule(optimizer))];
    check_index(j, rule.n_operands, "j", rule);
    put(name, rule.operands[j].name);
    put(needed_when, rule.operands[j].needed_when);
  });
}

int32_t fastopt_optimizer_hyper(const char* optimizer, int32_t i, const char** name, double* default_value,
                                int32_t* kind, const char** doc) {
  return guard([&] {
    const RuleInfo& rule = registered()[size_t(find_rule(optimizer))];
    check_index(i, rule.n_hyper, "i", rule);
    const HyperSpec& h = rule.hypers[i];
    const bool optional = is_optional(h.rule);
    put(name, h.name);
    put(default_value, optional ? std::nan("") : h.default_value);
    put(kind, int32_t(h.rule == HyperRule::Flag ? FASTOPT_HYPER_FLAG
                      : optional               ? FASTOPT_HYPER_OPTIONAL
                                               : FASTOPT_HYPER_REAL));
    put(doc, h.doc);
  });
}

int32_t fastopt_update_f32(const char* optimizer, int64_t count, const int64_t* sizes, float* const* operands,
                           int32_t n_operands, const double* hyper, int32_t n_hyper, int64_t step, double grad_scale,
                           int32_t skip_nonfinite, int32_t* found_inf) {
  return update<float>(optimizer, count, sizes, operands, n_operands, hyper, n_hyper, step, grad_scale,
                       skip_nonfinite, found_inf);
}

int32_t fastopt_update_f64(const char* optimizer, int64_t count, const int64_t* sizes, double* const* operands,
                           int32_t n_operands, const double* hyper, int32_t n_hyper, int64_t step,
                           double grad_scale, int32_t skip_nonfinite, int32_t* found_inf) {
  return update<double>(optimizer, count, sizes, operands, n_operands, hyper, n_hyper, step, grad_scale,
                        skip_nonfinite, found_inf);
}

}  // extern "C"
