// The description every optimizer gives of itself, read by every layer (the CPU loops of each
// instruction set, the CUDA multi-tensor launch, the Python entry point, the C ABI): its operands,
// its hyperparameters and their rules, and its per-element update.
//
// A rule is a struct (see lion.h for a small one) that derives from RuleDefaults and declares:
//
//   kName                    "lion": the Python function lion_, the C ABI's name
//   kSummary                 one line for the docstring ("Fused Lion step (Chen et al. 2023), in place.")
//   kOperands, kOperandSpecs {param, grad, state...}: operand 0 is the parameter, 1 the gradient (each
//                            state says whether it is never negative: its 8-bit map)
//   kHypers, kHyperSpecs     the scalar hyperparameters in argument order, lr first
//   kUsesStep                the call takes the 1-based step (bias corrections, schedules)
//   Hyper                    a struct with lr, step and scaling (GradScaling) and the rule's values;
//                            Hyper from_values(const double* values, int64_t step, GradScaling)
//                            takes the kHypers values in spec order (flags as 0 / 1)
//   kVariants, variant(h)    the compile-time variants (which state exists, which branch of the
//                            rule): the loops are instantiated once per variant, so they stay
//                            branch-free and vectorise
//   used(v)                  the operands variant v reads, as a bit mask (bit j: operand j)
//   Consts<M>, consts<M>(h)  the per-call constants in the math type M, computed in double once per
//                            call (FASTOPT_HD: on the device too, when lr or step live there)
//   apply<V, M>(c, e)        one element: e[0] the parameter, e[1] the unscaled gradient, e[2...] the
//                            state; updates e[0] and the state in place
//
// and may override RuleDefaults' hooks: check_more (rules tying arguments together) and range_more
// (limits in the arithmetic's type beyond each value fitting it).
//
// The functions a rule declares are FASTOPT_RULE_FN: always inlined, so that each instruction set's
// loops compile the rule with that set's flags (an out-of-line member function would be one symbol
// shared by every set's translation unit; see macros.h for the same concern about free functions).
#pragma once

#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/macros.h"

#if defined(__CUDACC__)
#define FASTOPT_RULE_FN __host__ __device__ __forceinline__
#else
#define FASTOPT_RULE_FN inline __attribute__((always_inline))
#endif

namespace fastopt {

// The rule a hyperparameter obeys (checked by every layer before anything is written).
enum class HyperRule : uint8_t {
  Finite,          // any finite number
  NonNegative,     // >= 0
  Positive,        // > 0 (and, in float32, a normal number: eps)
  UnitInterval,    // [0, 1): betas
  ClosedUnit,      // [0, 1]
  AtLeastOne,      // >= 1 (Rprop's etaplus)
  Flag,            // a bool (0 or 1)
  // Optional values (Python None, NaN in the values array: the rule computes them from the step).
  OptionalUnit,         // None or [0, 1]
  OptionalNonNegative,  // None or >= 0
};

constexpr bool is_optional(HyperRule r) { return r == HyperRule::OptionalUnit || r == HyperRule::OptionalNonNegative; }

struct HyperSpec {
  const char* name;
  HyperRule rule;
  double default_value;
  const char* doc;  // one line for the docstring
};

struct OperandSpec {
  const char* name;         // the Python argument ("exp_avgs")
  const char* needed_when;  // nullptr: always; else why an optional state is needed ("amsgrad=True")
  // A state the rule never makes negative (second moments, step sizes): its 8-bit form may take the
  // unsigned map, whose 256 codes all lie on [0, 1] (fastopt/quant8.h); the others take the signed one.
  bool non_negative = false;
};

// Bit j of an operand mask: operand j.
constexpr unsigned operand_bit(int j) { return 1u << unsigned(j); }

// A rule broken by a combination of arguments (check_more / range_more): "<name> <requirement>, got
// <value>", or the requirement alone when show_value is false. Static strings only (no allocation).
struct HyperProblem {
  const char* name = nullptr;  // nullptr: no problem
  const char* requirement = "";
  double value = 0.0;
  bool show_value = true;
  explicit operator bool() const { return name != nullptr; }
};

struct RuleDefaults {
  static constexpr int kVariants = 1;
  // consts() may compute from a step read on the device (a captured CUDA graph replays with the
  // device's step). false: the rule needs host values the step alone does not give (they are refused).
  static constexpr bool kDeviceStep = true;
  // consts() may compute from an lr read on the device. false: from_values derives host values from
  // the lr (ASGD's eta when it is not given), so a device lr is refused.
  static constexpr bool kDeviceLr = true;

  template <typename Hyper>
  static HyperProblem check_more(const Hyper&) {
    return {};
  }
  // `largest`: the largest finite number of the arithmetic (float32's or float64's).
  template <typename Hyper>
  static HyperProblem range_more(const Hyper&, double /*largest*/) {
    return {};
  }
};

}  // namespace fastopt
