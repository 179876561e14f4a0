// The hyperparameter checks of a rule (fastopt/rule.h), generic over its HyperSpecs: each value
// against its HyperRule, then the rule's own check_more; and, once the params' dtype is known, every
// value against the arithmetic's range (hyper_rules.h, MathRange) and the rule's range_more. Shared
// by the Python binding and the C ABI. `values` are the kHypers values in spec order.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "common/hyper_rules.h"
#include "fastopt/rule.h"

namespace fastopt::rules {

inline Check from_problem(const HyperProblem& p) {
  if (!p) return std::nullopt;
  return Violation{p.name, p.requirement, p.value, false, p.show_value};
}

inline Check check_spec(const HyperSpec& spec, double v) {
  switch (spec.rule) {
    case HyperRule::Finite: return finite(spec.name, v);
    case HyperRule::NonNegative: return nonnegative(spec.name, v);
    case HyperRule::Positive: return positive(spec.name, v);
    case HyperRule::UnitInterval: return unit_interval(spec.name, v);
    case HyperRule::ClosedUnit: return closed_unit_interval(spec.name, v);
    case HyperRule::AtLeastOne:
      if (auto bad = finite(spec.name, v)) return bad;
      if (v >= 1.0) return std::nullopt;
      return Violation{spec.name, "must be >= 1", v, false, true};
    case HyperRule::OptionalUnit:
      return std::isnan(v) ? std::nullopt : closed_unit_interval(spec.name, v);
    case HyperRule::OptionalNonNegative:
      return std::isnan(v) ? std::nullopt : nonnegative(spec.name, v);
    case HyperRule::Flag:
      if (v == 0.0 || v == 1.0) return std::nullopt;
      return Violation{spec.name, "must be a bool (0 or 1)", v, false, true};
  }
  return std::nullopt;
}

template <typename Rule>
Check check_rule(const double* values, const typename Rule::Hyper& hyper) {
  for (int i = 0; i < Rule::kHypers; ++i) {
    if (auto bad = check_spec(Rule::kHyperSpecs[i], values[i])) return bad;
  }
  if (Rule::kUsesStep) {
    if (auto bad = step(hyper.step)) return bad;
  }
  return from_problem(Rule::check_more(hyper));
}

template <typename Rule>
Check check_rule_range(const double* values, const typename Rule::Hyper& hyper, const MathRange& r) {
  for (int i = 0; i < Rule::kHypers; ++i) {
    const HyperSpec& spec = Rule::kHyperSpecs[i];
    if (spec.rule == HyperRule::Flag || (is_optional(spec.rule) && std::isnan(values[i]))) continue;
    Check bad = spec.rule == HyperRule::Positive ? positive_fits(spec.name, values[i], r)
                                                 : fits(spec.name, values[i], r);
    if (bad) return bad;
  }
  if (auto bad = positive_fits("grad_scale", hyper.scaling.grad_scale, r)) return bad;
  return from_problem(Rule::range_more(hyper, r.largest));
}

}  // namespace fastopt::rules
