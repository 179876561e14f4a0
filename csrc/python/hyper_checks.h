// Checks of scalar hyperparameters, run before any array is touched. Each error names the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

namespace fastopt::bindings {

inline std::string show(double value) { return pybind11::str(pybind11::float_(value)).cast<std::string>(); }

inline void require_finite(const char* name, double value) {
  if (!std::isfinite(value)) {
    throw pybind11::value_error(std::string(name) + " must be a finite number, got " + show(value));
  }
}

inline void require_nonnegative(const char* name, double value) {
  require_finite(name, value);
  if (value < 0.0) {
    throw pybind11::value_error(std::string(name) + " must be >= 0, got " + show(value));
  }
}

// eps: > 0. eps = 0 lets an element whose gradient and state are 0 compute 0 / 0 = NaN and turn
// its parameter NaN for good, so every optimizer requires eps > 0 (torch accepts 0).
inline void require_positive(const char* name, double value) {
  require_finite(name, value);
  if (!(value > 0.0)) {
    throw pybind11::value_error(std::string(name) + " must be > 0, got " + show(value));
  }
}

// grad_scale: the loss scale the gradients are divided by; finite and > 0, and (checked once the
// dtype is known, by require_grad_scale_fits) still finite and > 0 when rounded to float32.
inline void require_grad_scale_fits(double value, bool float32) {
  const double rounded = float32 ? double(float(value)) : value;
  if (!(std::isfinite(rounded) && rounded > 0.0)) {
    throw pybind11::value_error("grad_scale " + show(value) + " is out of the float32 range of the arrays");
  }
}

// Adam's betas: 0 <= value < 1.
inline void require_unit_interval(const char* name, double value) {
  require_finite(name, value);
  if (!(value >= 0.0 && value < 1.0)) {
    throw pybind11::value_error(std::string(name) + " must be in [0, 1), got " + show(value));
  }
}

// RMSprop's alpha: 0 <= alpha <= 1. torch checks only alpha >= 0, but alpha > 1 makes (1 - alpha)
// negative and square_avg negative, so every parameter turns NaN; an error is kinder.
inline void require_decay(const char* name, double value) {
  require_nonnegative(name, value);
  if (value > 1.0) {
    throw pybind11::value_error(std::string(name) + " must be in [0, 1], got " + show(value));
  }
}

inline void require_step(int64_t step) {
  if (step < 1) {
    throw pybind11::value_error("step must be >= 1 (the 1-based number of this update), got " +
                                std::to_string(step));
  }
}

}  // namespace fastopt::bindings
