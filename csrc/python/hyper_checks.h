// Checks of scalar hyperparameters, run before any array is touched. Each error names the argument.
// The rules themselves live in common/hyper_rules.h (shared with the C ABI); this turns a broken
// rule into a ValueError with the value shown as Python shows it.
#pragma once

#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/hyper_rules.h"

namespace fastopt::bindings {

inline std::string show(double value) { return pybind11::str(pybind11::float_(value)).cast<std::string>(); }

inline void require(const rules::Check& check) {
  if (check) throw pybind11::value_error(rules::describe(*check, show));
}

inline void require_finite(const char* name, double value) { require(rules::finite(name, value)); }

inline void require_nonnegative(const char* name, double value) { require(rules::nonnegative(name, value)); }

// Strictly positive (eps, grad_scale): see rules::positive.
inline void require_positive(const char* name, double value) { require(rules::positive(name, value)); }

// Once the arrays' dtype is known, the hyperparameters are checked against the range of the
// kernels' arithmetic too: rules::check_range and rules::fits / positive_fits (grad_scale).

}  // namespace fastopt::bindings
