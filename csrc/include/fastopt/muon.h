// Muon's elementwise parts (Jordan et al. 2024; torch.optim.Muon's semantics). A Muon step per 2-D
// parameter is
//
//   buf = momentum * buf + (1 - momentum) * g          (g = -grad when maximize)     } muon_momentum
//   U   = nesterov ? (1 - momentum) * g + momentum * buf : buf                      }
//   O   = NewtonSchulz(U)                             (matrix products: the caller's framework)
//   p   = p * (1 - lr * weight_decay) - lr * lr_scale * O                            } muon_apply
//
// with lr_scale Muon's shape adjustment (sqrt(max(1, rows / cols)) or 0.2 * sqrt(max(rows, cols))).
// The two passes are rules like every other optimizer's, so they get the CPU loops of every
// instruction set, the CUDA launches, the Python functions fastopt.muon_momentum_ / muon_apply_ and
// the C ABI from the registry; fastopt.muon_ (fastopt/_muon.py) runs the iteration between them.
//
// muon_momentum: operands {updates, grads, momentum_buffers}: `updates` (the slot of a parameter)
// receives U and is not read for its value. muon_apply: operands {params, updates}: the updates sit in
// the gradient's slot (only read; a grad_scale would divide them, as it divides a gradient).
#pragma once

#include <cstdint>

#include "fastopt/grad_scale.h"
#include "fastopt/macros.h"
#include "fastopt/rule.h"

namespace fastopt {

struct MuonMomentumHyper {
  double lr;  // unused (the momentum pass has no learning rate); kept for the shared interface
  double momentum;
  bool nesterov;
  bool maximize;
  int64_t step;  // unused
  GradScaling scaling;
};

template <typename M>
struct MuonMomentumScalars {
  M momentum, one_minus_momentum, grad_sign;
};

struct MuonMomentumRule : RuleDefaults {
  static constexpr const char* kName = "muon_momentum";
  static constexpr const char* kSummary =
      "Muon's momentum pass (the elementwise part before Newton-Schulz), in place:\n"
      "m = momentum * m + (1 - momentum) * g; updates = (1 - momentum) * g + momentum * m when nesterov,\n"
      "else updates = m. `updates` is written, not read. momentum_buffers start at zero.";
  static constexpr int kOperands = 3;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {{"updates", nullptr}, {"grads", nullptr},
                                                           {"momentum_buffers", nullptr}};
  static constexpr int kHypers = 3;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"momentum", HyperRule::NonNegative, 0.95, "momentum factor (torch.optim.Muon: >= 0)"},
      {"nesterov", HyperRule::Flag, 1.0, "Nesterov momentum: the update looks ahead along the momentum"},
      {"maximize", HyperRule::Flag, 0.0, "ascend the gradient"},
  };
  static constexpr bool kUsesStep = false;

  using Hyper = MuonMomentumHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    return {0.0, v[0], v[1] != 0.0, v[2] != 0.0, step, scaling};
  }

  // variant 0: plain (updates = m), 1: nesterov
  static constexpr int kVariants = 2;
  static int variant(const Hyper& h) { return h.nesterov ? 1 : 0; }
  // (operand 0 is read only because the loop writes back the operands it reads; its value is unused)
  static constexpr unsigned used(int /*variant*/) { return 0b111u; }

  template <typename M>
  using Consts = MuonMomentumScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    return {M(h.momentum), M(1.0 - h.momentum), M(h.maximize ? -1.0 : 1.0)};
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void apply(const Consts<M>& s, M (&e)[kOperands]) {
    M& u = e[0];
    M& m = e[2];
    const M g = e[1] * s.grad_sign;
    m = s.momentum * m + s.one_minus_momentum * g;
    if constexpr (V == 1) {
      u = s.one_minus_momentum * g + s.momentum * m;
    } else {
      u = m;
    }
  }
};

struct MuonApplyHyper {
  double lr;
  double weight_decay;
  double lr_scale;
  int64_t step;  // unused
  GradScaling scaling;
};

template <typename M>
struct MuonApplyScalars {
  M decay_keep, neg_step;
};

struct MuonApplyRule : RuleDefaults {
  static constexpr const char* kName = "muon_apply";
  static constexpr const char* kSummary =
      "Muon's final pass (after Newton-Schulz), in place:\n"
      "p = p * (1 - lr * weight_decay) - lr * lr_scale * updates. `updates` (the orthogonalised momentum) is\n"
      "only read; lr_scale is Muon's shape adjustment of the step.";
  static constexpr int kOperands = 2;
  static constexpr OperandSpec kOperandSpecs[kOperands] = {{"params", nullptr}, {"updates", nullptr}};
  static constexpr int kHypers = 3;
  static constexpr HyperSpec kHyperSpecs[kHypers] = {
      {"lr", HyperRule::NonNegative, 1e-3, "learning rate"},
      {"weight_decay", HyperRule::NonNegative, 0.1, "decoupled: p *= 1 - lr * weight_decay"},
      {"lr_scale", HyperRule::NonNegative, 1.0, "the update's step is lr * lr_scale"},
  };
  static constexpr bool kUsesStep = false;

  using Hyper = MuonApplyHyper;
  static Hyper from_values(const double* v, int64_t step, GradScaling scaling) {
    return {v[0], v[1], v[2], step, scaling};
  }

  static constexpr unsigned used(int /*variant*/) { return 0b11u; }
  static int variant(const Hyper&) { return 0; }

  template <typename M>
  using Consts = MuonApplyScalars<M>;

  template <typename M>
  static FASTOPT_RULE_FN Consts<M> consts(const Hyper& h) {
    return {M(1.0 - h.lr * h.weight_decay), M(-(h.lr * h.lr_scale))};
  }

  template <int V, typename M>
  static FASTOPT_RULE_FN void apply(const Consts<M>& s, M (&e)[kOperands]) {
    M& p = e[0];
    p = p * s.decay_keep;
    p = p + s.neg_step * e[1];
  }

  static HyperProblem range_more(const Hyper& h, double largest) {
    if (!(h.lr * h.weight_decay <= largest)) {
      return {"lr * weight_decay", "must fit the arithmetic's type: Muon scales the params by 1 - lr * weight_decay",
              h.lr * h.weight_decay, true};
    }
    if (!(h.lr * h.lr_scale <= largest)) {
      return {"lr * lr_scale", "must fit the arithmetic's type (the step of the update)", h.lr * h.lr_scale, true};
    }
    return {};
  }
};

}  // namespace fastopt
