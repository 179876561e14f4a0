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
