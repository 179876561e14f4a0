// Element loops of the optimizer updates. Each loop reads its operands into locals, applies the
// shared per-element rule and writes back: one pass over memory, no temporaries. The flags are
// compile-time constants (static_switch.h), so the loop bodies are branch-free and vectorise.
//
// Included only by kernels_for_isa.cpp, once per instruction set, inside that set's namespace.
// Operand order of each TensorList: sgd/adagrad {param, grad, state}; rmsprop {param, grad,
// square_avg, momentum_buffer, grad_avg}; adam {param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq}.
// Unused operands are nullptr. Each update returns found_inf: true when skip_nonfinite found a
// non-finite gradient and nothing was written (grad_scale.h).
//
// Each loop has a storage type P for the params and grads and an arithmetic type T for the math and
// the optimizer state (storage.h): P = T for float32/float64, P = Bf16 or F16 with T = float for
// half-precision parameters on the CPU (the *_half entries: float32 state, the math in float32, the
// params rounded to nearest even once per step).
#pragma once

#include "cpu/line_order.h"
#include "cpu/parallel.h"
#include "cpu/static_switch.h"
#include "cpu/storage.h"
#include "cpu/tensor_list.h"
#include "fastopt/fastopt.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// An operand of tensor k as storage X, from element `begin` on (nullptr stays nullptr: an unused
// operand). The lists hold T* (plain calls) or void* (half calls, whose operands differ in type).
template <typename X, typename List>
X* operand_as(const List& tensors, int32_t k, int j, int64_t begin) {
  X* base = static_cast<X*>(tensors.ptrs[size_t(k)][size_t(j)]);
  return base == nullptr ? nullptr : base + begin;
}

// The chunk heads (parallel.h, make_chunks) that start every chunk of tensor k on a cache line of
// its operand `operand`, of storage X (the parameter for the updates: every operand is aligned with
// it when all come from one allocator, NumPy's or torch's). Only large calls are chunked, so small
// ones skip it.
template <typename X, typename List>
std::vector<int64_t> operand_heads(const List& tensors, int operand) {
  std::vector<int64_t> heads;
  if (total_elements(tensors.sizes) < kParallelThreshold) return heads;
  heads.reserve(tensors.ptrs.size());
  for (const auto& ptrs : tensors.ptrs) heads.push_back(elements_to_alignment(static_cast<const X*>(ptrs[size_t(operand)])));
  return heads;
}

// for_each_chunk over the elements of an update whose params are of storage P, its chunks on the
// parameter's cache lines.
template <typename P, typename List, typename Body>
void for_each_update_chunk(const List& tensors, Body&& body) {
  for_each_chunk(tensors.sizes, body, operand_heads<P>(tensors, 0));
}

// The pre-pass of skip_nonfinite: true when any unscaled gradient (operand 1 of every tensor, of
// storage P, unscaled in T) is NaN or +-Inf. It reads every gradient and writes nothing; each thread
// reads the ranges it then updates (parallel.h, any_chunk; the cuts on the gradient's line grid).
// The flag is an integer OR, so the loop vectorises.
template <typename P, typename T, typename List>
bool any_nonfinite_grad(const List& tensors, double grad_scale) {
  const T scale = T(grad_scale);
  bool found = false;
  with_flags(
      [&](auto SCALED) {
        found = any_chunk(tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          const P* __restrict g = static_cast<const P*>(tensors.ptrs[size_t(k)][1]);
          unsigned bad = 0;
          for (int64_t i = begin; i < end; ++i) {
            bad |= unsigned(!is_finite_(unscale_grad<SCALED.value>(T(widen(g[i])), scale)));
          }
          return bad != 0;
        }, operand_heads<P>(tensors, 1));
      },
      grad_scale != 1.0);
  return found;
}

// found_inf of an update call: its pre-pass ran and found a non-finite gradient, so the caller
// must write nothing. The update loops below take SCALED as one more compile-time flag, false
// when grad_scale == 1, so an unscaled call divides nothing and runs exactly the code it did before.
template <typename P, typename T, typename List>
bool skip_call(const List& tensors, const GradScaling& scaling) {
  return scaling.skip_nonfinite && any_nonfinite_grad<P, T>(tensors, scaling.grad_scale);
}

// The found_inf pre-pass alone (operand 0 unused), for a step spread over several kernel calls.
template <typename T>
bool nonfinite(const TensorList<T, 2>& tensors, double grad_scale) {
  return any_nonfinite_grad<T, T>(tensors, grad_scale);
}

// The element loops, one per rule. Their operands are __restrict *function parameters*: GCC trusts
// restrict there (also once inlined), where on local pointers it adds run-time overlap checks instead,
// and gives up vectorising when a loop has too many operand pairs to check (Adam with amsgrad and
// centered RMSprop with momentum, five arrays, ran scalar). tests/kernels/test_loop_vectorised.py checks that
// every instantiation of these loops is vectorised at every instruction set. `gs` is the gradient
// scale by value (a captured reference could alias the arrays).

// L2: weight_decay != 0 (the decay term is skipped otherwise, as torch skips it: weight_decay.h).
template <bool MOMENTUM, bool NESTEROV, bool FIRST, bool L2, bool SCALED, typename P, typename T>
inline void sgd_elements(int64_t n, P* __restrict p, const P* __restrict g, T* __restrict b, T gs,
                         const SgdScalars<T> s) {
  FASTOPT_LINE_LOOP
  for (int64_t i = 0; i < n; ++i) {
    T pi = widen(p[i]);
    T bi = 0;
    if constexpr (MOMENTUM && !FIRST) bi = b[i];
    sgd_update<MOMENTUM, NESTEROV, FIRST, L2 ? kL2Decay : kNoDecay>(pi, unscale_grad<SCALED>(T(widen(g[i])), gs), bi, s);
    p[i] = narrow<P>(pi);
    if constexpr (MOMENTUM) b[i] = bi;
  }
}

template <bool L2, bool SCALED, typename P, typename T>
inline void adagrad_elements(int64_t n, P* __restrict p, const P* __restrict g, T* __restrict sum, T gs,
                             const AdagradScalars<T> s) {
  FASTOPT_LINE_LOOP
  for (int64_t i = 0; i < n; ++i) {
    T pi = widen(p[i]), si = sum[i];
    adagrad_update<L2 ? kL2Decay : kNoDecay>(pi, unscale_grad<SCALED>(T(widen(g[i])), gs), si, s);
    p[i] = narrow<P>(pi);
    sum[i] = si;
  }
}

template <bool CENTERED, bool MOMENTUM, bool L2, bool SCALED, typename P, typename T>
inline void rmsprop_elements(int64_t n, P* __restrict p, const P* __restrict g, T* __restrict sq,
                             T* __restrict b, T* __restrict ga, T gs, const RmspropScalars<T> s) {
  FASTOPT_LINE_LOOP
  for (int64_t i = 0; i < n; ++i) {
    T pi = widen(p[i]), sqi = sq[i], bi = 0, gai = 0;
    if constexpr (MOMENTUM) bi = b[i];
    if constexpr (CENTERED) gai = ga[i];
    rmsprop_update<CENTERED, MOMENTUM, L2 ? kL2Decay : kNoDecay>(pi, unscale_grad<SCALED>(T(widen(g[i])), gs), sqi, bi, gai, s);
    p[i] = narrow<P>(pi);
    sq[i] = sqi;
    if constexpr (MOMENTUM) b[i] = bi;
    if constexpr (CENTERED) ga[i] = gai;
  }
}

template <bool AMSGRAD, bool DECOUPLED, bool SCALED, typename P, typename T>
inline void adam_elements(int64_t n, P* __restrict p, const P* __restrict g, T* __restrict m, T* __restrict v,
                          T* __restrict vmax, T gs, const AdamScalars<T> s) {
  FASTOPT_LINE_LOOP
  for (int64_t i = 0; i < n; ++i) {
    T pi = widen(p[i]), mi = m[i], vi = v[i], vmaxi = 0;
    if constexpr (AMSGRAD) vmaxi = vmax[i];
    adam_update<AMSGRAD, DECOUPLED>(pi, unscale_grad<SCALED>(T(widen(g[i])), gs), mi, vi, vmaxi, s);
    p[i] = narrow<P>(pi);
    m[i] = mi;
    v[i] = vi;
    if constexpr (AMSGRAD) vmax[i] = vmaxi;
  }
}

// The operands an update writes: all but the gradient (operand 1), for lines_down (line_order.h).
constexpr unsigned kWrittenAllButGrad = ~(1u << 1);

// body(n, p, g, offset) over the n elements of a chunk whose params and grads are of storage P: a cache
// line at a time, walking up or down as the places of the tensor's operands `ptrs` favour (line_order.h:
// the order changes no bit), or, for float16 where the CPU converts halves itself (storage.h,
// kHardwareF16), in blocks staged through float32 buffers on the stack (p and g widened there, the float
// loop run on them, p narrowed back), the state operands then taken from element `offset` of the chunk.
constexpr int64_t kStageElements = 512;

template <typename P, typename Ptrs, typename Body>
FASTOPT_HOST void staged(int64_t n, P* p, const P* g, const Ptrs& ptrs, Body&& body) {
  if constexpr (std::is_same_v<P, F16> && kHardwareF16) {
    (void)ptrs;  // the stack blocks are in cache: their order does not matter
    alignas(64) float pb[kStageElements];
    alignas(64) float gb[kStageElements];
    for (int64_t at = 0; at < n; at += kStageElements) {
      const int64_t m = n - at < kStageElements ? n - at : kStageElements;
      widen_block(p + at, pb, m);
      widen_block(g + at, gb, m);
      body(m, pb, static_cast<const float*>(gb), at);
      narrow_block(pb, p + at, m);
    }
  } else {
    const bool down = lines_down(n / kLineElements<P>, ptrs, kWrittenAllButGrad);
    for_each_line<kLineElements<P>>(n, down, [&](int64_t at, int64_t count) { body(count, p + at, g + at, at); });
  }
}

// The updates over a list whose params and grads are of storage P and whose math and state are T
// (named *_stored: the tests find each instantiation's loops by these names).
template <typename P, typename T, typename List>
bool sgd_stored(const List& tensors, const SgdHyper& hyper) {
  if (skip_call<P, T>(tensors, hyper.scaling)) return true;
  const SgdScalars<T> s = sgd_scalars<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  const bool momentum = hyper.momentum != 0.0;
  with_flags(
      [&](auto MOMENTUM, auto NESTEROV, auto FIRST, auto L2, auto SCALED) {
        for_each_update_chunk<P>(tensors, [&](int32_t k, int64_t begin, int64_t end) {
          staged(end - begin, operand_as<P>(tensors, k, 0, begin), operand_as<const P>(tensors, k, 1, begin),
                 tensors.ptrs[size_t(k)],
                 [&](int64_t n, auto* p, const auto* g, int64_t at) {
                   sgd_elements<MOMENTUM.value, NESTEROV.value, FIRST.value, L2.value, SCALED.value>(
                       n, p, g, operand_as<T>(tensors, k, 2, begin + at), scale, s);
                 });
        });
      },
      momentum, momentum && hyper.nesterov, momentum && hyper.step == 1, hyper.weight_decay != 0.0,
      hyper.scaling.grad_scale != 1.0);
  return false;
}

template <typename P, typename T, typename List>
bool adagrad_stored(const List& tensors, const AdagradHyper& hyper) {
  if (skip_call<P, T>(tensors, hyper.scaling)) return true;
  const AdagradScalars<T> s = adagrad_scalars<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  with_flags(
      [&](auto L2, auto SCALED) {
        for_each_update_chunk<P>(tensors, [&](int32_t k, int64_t begin, int64_t end) {
          staged(end - begin, operand_as<P>(tensors, k, 0, begin), operand_as<const P>(tensors, k, 1, begin),
                 tensors.ptrs[size_t(k)],
                 [&](int64_t n, auto* p, const auto* g, int64_t at) {
                   adagrad_elements<L2.value, SCALED.value>(n, p, g, operand_as<T>(tensors, k, 2, begin + at), scale, s);
                 });
        });
      },
      hyper.weight_decay != 0.0, hyper.scaling.grad_scale != 1.0);
  return false;
}

template <typename P, typename T, typename List>
bool rmsprop_stored(const List& tensors, const RmspropHyper& hyper) {
  if (skip_call<P, T>(tensors, hyper.scaling)) return true;
  const RmspropScalars<T> s = rmsprop_scalars<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  with_flags(
      [&](auto CENTERED, auto MOMENTUM, auto L2, auto SCALED) {
        for_each_update_chunk<P>(tensors, [&](int32_t k, int64_t begin, int64_t end) {
          staged(end - begin, operand_as<P>(tensors, k, 0, begin), operand_as<const P>(tensors, k, 1, begin),
                 tensors.ptrs[size_t(k)],
                 [&](int64_t n, auto* p, const auto* g, int64_t at) {
                   rmsprop_elements<CENTERED.value, MOMENTUM.value, L2.value, SCALED.value>(
                       n, p, g, operand_as<T>(tensors, k, 2, begin + at), operand_as<T>(tensors, k, 3, begin + at),
                       operand_as<T>(tensors, k, 4, begin + at), scale, s);
                 });
        });
      },
      hyper.centered, hyper.momentum > 0.0, hyper.weight_decay != 0.0, hyper.scaling.grad_scale != 1.0);
  return false;
}

template <typename P, typename T, typename List>
bool adam_stored(const List& tensors, const AdamHyper& hyper) {
  if (skip_call<P, T>(tensors, hyper.scaling)) return true;
  const AdamScalars<T> s = adam_scalars<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  with_flags(
      [&](auto AMSGRAD, auto DECOUPLED, auto SCALED) {
        for_each_update_chunk<P>(tensors, [&](int32_t k, int64_t begin, int64_t end) {
          staged(end - begin, operand_as<P>(tensors, k, 0, begin), operand_as<const P>(tensors, k, 1, begin),
                 tensors.ptrs[size_t(k)],
                 [&](int64_t n, auto* p, const auto* g, int64_t at) {
                   adam_elements<AMSGRAD.value, DECOUPLED.value, SCALED.value>(
                       n, p, g, operand_as<T>(tensors, k, 2, begin + at), operand_as<T>(tensors, k, 3, begin + at),
                       operand_as<T>(tensors, k, 4, begin + at), scale, s);
                 });
        });
      },
      hyper.amsgrad, adam_decoupled_form(hyper), hyper.scaling.grad_scale != 1.0);
  return false;
}

// The table's entries: float32/float64 lists, and half-precision params (storage H) with float32 state.
template <typename T>
bool sgd(const TensorList<T, 3>& tensors, const SgdHyper& hyper) {
  return sgd_stored<T, T>(tensors, hyper);
}
template <typename T>
bool adagrad(const TensorList<T, 3>& tensors, const AdagradHyper& hyper) {
  return adagrad_stored<T, T>(tensors, hyper);
}
template <typename T>
bool rmsprop(const TensorList<T, 5>& tensors, const RmspropHyper& hyper) {
  return rmsprop_stored<T, T>(tensors, hyper);
}
template <typename T>
bool adam(const TensorList<T, 5>& tensors, const AdamHyper& hyper) {
  return adam_stored<T, T>(tensors, hyper);
}

template <typename H>
HalfKernels half_kernels() {
  return {&sgd_stored<H, float, TensorList<void, 3>>, &adagrad_stored<H, float, TensorList<void, 3>>,
          &rmsprop_stored<H, float, TensorList<void, 5>>, &adam_stored<H, float, TensorList<void, 5>>,
          &any_nonfinite_grad<H, float, TensorList<void, 2>>};
}

// The benchmarks' bandwidth probe: a += b over the same chunks and threads as the updates.
template <typename T>
void probe_add(T* a, const T* b, int64_t n) {
  for_each_chunk(std::vector<int64_t>{n}, [&](int32_t, int64_t begin, int64_t end) {
    T* __restrict x = a;
    const T* __restrict y = b;
    for (int64_t i = begin; i < end; ++i) x[i] = x[i] + y[i];
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
