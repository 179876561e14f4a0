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

// grad_scale: the loss scale the gradients are divided by; finite and > 0, and (checked once the
// dtype is known) still finite and > 0 when rounded to float32.
inline void require_grad_scale_fits(double value, bool float32) {
  const double rounded = float32 ? double(float(value)) : value;
  if (!(std::isfinite(rounded) && rounded > 0.0)) {
    throw pybind11::value_error("grad_scale " + show(value) + " is out of the float32 range of the arrays");
  }
}

}  // namespace fastopt::bindings
