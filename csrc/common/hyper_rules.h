// The rules every optimizer's scalar hyperparameters obey, written once and shared by the Python
// binding (which raises ValueError) and the C ABI (which returns FASTOPT_ERROR_HYPERPARAMETER).
// A check returns the first rule broken, in argument order, or nothing. No Python, no I/O.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <string>

#include "fastopt/fastopt.h"

namespace fastopt::rules {

// A broken rule: "<name> <requirement>, got <value>" (or just the requirement for a rule that
// ties several arguments together). Each layer formats the value its own way.
struct Violation {
  const char* name;
  const char* requirement;
  double value;
  bool integer;     // value is a whole number (step): shown without a fraction
  bool show_value;  // false: the requirement alone is the message
};

using Check = std::optional<Violation>;

inline Check finite(const char* name, double v) {
  if (std::isfinite(v)) return std::nullopt;
  return Violation{name, "must be a finite number", v, false, true};
}

inline Check nonnegative(const char* name, double v) {
  if (auto bad = finite(name, v)) return bad;
  if (v >= 0.0) return std::nullopt;
  return Violation{name, "must be >= 0", v, false, true};
}

// eps and grad_scale: > 0. eps = 0 lets an element whose gradient and state are 0 compute 0 / 0 = NaN
// and turn its parameter NaN for good, so every optimizer requires eps > 0 (torch accepts 0).
inline Check positive(const char* name, double v) {
  if (auto bad = finite(name, v)) return bad;
  if (v > 0.0) return std::nullopt;
  return Violation{name, "must be > 0", v, false, true};
}

// Adam's betas: 0 <= value < 1.
inline Check unit_interval(const char* name, double v) {
  if (auto bad = finite(name, v)) return bad;
  if (v >= 0.0 && v < 1.0) return std::nullopt;
  return Violation{name, "must be in [0, 1)", v, false, true};
}

// RMSprop's alpha: 0 <= alpha <= 1. torch checks only alpha >= 0, but alpha > 1 makes (1 - alpha)
// negative and square_avg negative, so every parameter turns NaN; an error is kinder.
inline Check closed_unit_interval(const char* name, double v) {
  if (auto bad = finite(name, v)) return bad;
  if (v >= 0.0 && v <= 1.0) return std::nullopt;
  return Violation{name, "must be in [0, 1]", v, false, true};
}

inline Check step(int64_t s) {
  if (s >= 1) return std::nullopt;
  return Violation{"step", "must be >= 1 (the 1-based number of this update)", double(s), true, true};
}

// The first broken rule of a list of checks.
inline Check first(std::initializer_list<Check> checks) {
  for (const Check& c : checks) {
    if (c) return c;
  }
  return std::nullopt;
}

inline Check check(const SgdHyper& h) {
  if (auto bad = first({nonnegative("lr", h.lr), nonnegative("momentum", h.momentum),
                        finite("dampening", h.dampening), nonnegative("weight_decay", h.weight_decay),
                        step(h.step)})) {
    return bad;
  }
  if (h.nesterov && (h.momentum <= 0.0 || h.dampening != 0.0)) {
    return Violation{"nesterov", "nesterov=True requires momentum > 0 and dampening == 0", 0.0, false, false};
  }
  return std::nullopt;
}

inline Check check(const AdagradHyper& h) {
  return first({nonnegative("lr", h.lr), nonnegative("lr_decay", h.lr_decay),
                nonnegative("weight_decay", h.weight_decay), positive("eps", h.eps), step(h.step)});
}

inline Check check(const RmspropHyper& h) {
  return first({nonnegative("lr", h.lr), closed_unit_interval("alpha", h.alpha), positive("eps", h.eps),
                nonnegative("weight_decay", h.weight_decay), nonnegative("momentum", h.momentum)});
}

inline Check check(const AdamHyper& h) {
  return first({nonnegative("lr", h.lr), unit_interval("beta1", h.beta1), unit_interval("beta2", h.beta2),
                positive("eps", h.eps), nonnegative("weight_decay", h.weight_decay), step(h.step)});
}

// Cross-entropy scalars (the reduction and the labels are checked by each layer).
inline Check check_cross_entropy(double label_smoothing, double z_loss) {
  if (auto bad = finite("label_smoothing", label_smoothing)) return bad;
  if (label_smoothing < 0.0 || label_smoothing > 1.0) {
    return Violation{"label_smoothing", "must be in [0, 1]", label_smoothing, false, true};
  }
  return nonnegative("z_loss", z_loss);
}

// The message; `show` formats a non-integer value (Python's repr in the binding).
template <typename Show>
std::string describe(const Violation& v, Show&& show) {
  if (!v.show_value) return v.requirement;
  const std::string value = v.integer ? std::to_string(int64_t(v.value)) : show(v.value);
  return std::string(v.name) + " " + v.requirement + ", got " + value;
}

}  // namespace fastopt::rules
