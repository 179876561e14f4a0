// The rules every optimizer's scalar hyperparameters obey, written once and shared by the Python
// binding (which raises ValueError) and the C ABI (which returns FASTOPT_ERROR_HYPERPARAMETER).
// A check returns the first rule broken, in argument order, or nothing. No Python, no I/O.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <optional>
#include <string>

#include "fastopt/fastopt.h"

namespace fastopt::rules {

// A broken rule: "<name> <requirement>, got <value>" (or just the requirement for a rule that
// ties several arguments together). Each layer formats the value its own way.
struct Violation {
  const char* name;
  std::string requirement;
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

// ---------------------------------------------------------------- the arithmetic's range
//
// The kernels round every hyperparameter (and the per-call constants made from them) to the type
// they compute in: float32 for float32 params, and for float16 / bfloat16 ones (whose math is
// float32); float64 for float64 params. A value that passes the rules above can still break there:
// lr = 1e39 is +inf in float32 and turns every parameter to -inf; eps = 1e-50 is 0 in float32 and
// brings back the 0 / 0 = NaN that eps > 0 is there to prevent. So once the params' dtype is known,
// every hyperparameter must also fit the arithmetic's range, and in float32 the positive ones (eps,
// grad_scale) must be normal numbers: a smaller double rounds to 0 or to a float32 subnormal, which
// is flushed to 0 where denormals are off (FTZ/DAZ, as torch.set_flush_denormal(True) sets them).
// In float64 any value > 0 stays as it is (under DAZ the check itself already sees a subnormal as 0).

struct MathRange {
  const char* type;          // "float32"
  double largest;            // FLT_MAX
  double smallest_positive;  // of eps and grad_scale: FLT_MIN (the smallest normal float32)
  const char* params;        // which params compute in this type, for messages
};

constexpr MathRange kFloat32Math{"float32", double(std::numeric_limits<float>::max()),
                                 double(std::numeric_limits<float>::min()),
                                 "params that compute in float32 (float32, float16, bfloat16)"};
constexpr MathRange kFloat64Math{"float64", std::numeric_limits<double>::max(),
                                 std::numeric_limits<double>::denorm_min(), "float64 params"};

inline MathRange math_range(bool float64) { return float64 ? kFloat64Math : kFloat32Math; }

// A limit as the type shows it (9 digits identify a float32, 17 a float64).
inline std::string limit_text(double v, const MathRange& r) {
  char text[40];
  std::snprintf(text, sizeof text, r.largest == std::numeric_limits<double>::max() ? "%.17g" : "%.9g", v);
  return text;
}

// |v| within the type's finite range. (Compared in double: converting an out-of-range double to
// float is undefined behaviour in C++, and the comparison needs no conversion.)
inline Check fits(const char* name, double v, const MathRange& r) {
  if (std::fabs(v) <= r.largest) return std::nullopt;
  return Violation{name,
                   "must be at most " + limit_text(r.largest, r) + " in magnitude (the largest " + r.type +
                       ") for " + r.params,
                   v, false, true};
}

// eps and grad_scale (checked after positive(), so only float32's floor can refuse here).
inline Check positive_fits(const char* name, double v, const MathRange& r) {
  if (auto bad = fits(name, v, r)) return bad;
  if (v >= r.smallest_positive) return std::nullopt;
  return Violation{name,
                   "must be at least " + limit_text(r.smallest_positive, r) + " (the smallest normal " + r.type +
                       ": a smaller value is 0, or flushed to 0, in the kernels' arithmetic) for " + r.params,
                   v, false, true};
}

inline Check check_range(const SgdHyper& h, const MathRange& r) {
  return first({fits("lr", h.lr, r), fits("momentum", h.momentum, r), fits("dampening", h.dampening, r),
                fits("weight_decay", h.weight_decay, r), positive_fits("grad_scale", h.scaling.grad_scale, r)});
}

inline Check check_range(const AdagradHyper& h, const MathRange& r) {
  return first({fits("lr", h.lr, r), fits("lr_decay", h.lr_decay, r), fits("weight_decay", h.weight_decay, r),
                positive_fits("eps", h.eps, r), positive_fits("grad_scale", h.scaling.grad_scale, r)});
}

inline Check check_range(const RmspropHyper& h, const MathRange& r) {
  return first({fits("lr", h.lr, r), positive_fits("eps", h.eps, r), fits("weight_decay", h.weight_decay, r),
                fits("momentum", h.momentum, r), positive_fits("grad_scale", h.scaling.grad_scale, r)});
}

// Adam also folds lr into two constants. The step size lr / (1 - beta1^t) is largest at the first
// step, lr / (1 - beta1), and that bound is what is checked, so that a call's verdict does not depend
// on its step (a stateful optimizer checks its groups once, before the steps of all its params).
inline Check check_range(const AdamHyper& h, const MathRange& r) {
  if (auto bad = first({fits("lr", h.lr, r), fits("beta1", h.beta1, r), fits("beta2", h.beta2, r),
                        positive_fits("eps", h.eps, r), fits("weight_decay", h.weight_decay, r),
                        positive_fits("grad_scale", h.scaling.grad_scale, r)})) {
    return bad;
  }
  const double first_step_size = h.lr / (1.0 - h.beta1);
  if (!(first_step_size <= r.largest)) {
    return Violation{"lr",
                     "must be at most (1 - beta1) * " + limit_text(r.largest, r) +
                         ": the first update's step size lr / (1 - beta1) must fit in " + r.type + " for " + r.params,
                     h.lr, false, true};
  }
  if (h.decoupled && !(h.lr * h.weight_decay <= r.largest)) {
    return Violation{"lr * weight_decay",
                     "must be at most " + limit_text(r.largest, r) + ": AdamW scales the params by " +
                         "1 - lr * weight_decay in " + r.type + " for " + r.params,
                     h.lr * h.weight_decay, false, true};
  }
  return std::nullopt;
}

// Cross-entropy scalars (the reduction and the labels are checked by each layer).
inline Check check_cross_entropy(double label_smoothing, double z_loss) {
  if (auto bad = finite("label_smoothing", label_smoothing)) return bad;
  if (label_smoothing < 0.0 || label_smoothing > 1.0) {
    return Violation{"label_smoothing", "must be in [0, 1]", label_smoothing, false, true};
  }
  return nonnegative("z_loss", z_loss);
}

// z_loss multiplies lse^2 in the scores' type (label_smoothing is in [0, 1] already).
inline Check check_cross_entropy_range(double z_loss, const MathRange& r) { return fits("z_loss", z_loss, r); }

// The message; `show` formats a non-integer value (Python's repr in the binding).
template <typename Show>
std::string describe(const Violation& v, Show&& show) {
  if (!v.show_value) return v.requirement;
  const std::string value = v.integer ? std::to_string(int64_t(v.value)) : show(v.value);
  return std::string(v.name) + " " + v.requirement + ", got " + value;
}

}  // namespace fastopt::rules
