// Element loops of the optimizer updates. Each loop reads its operands into locals, applies the
// shared per-element rule and writes back: one pass over memory, no temporaries. The flags are
// compile-time constants (static_switch.h), so the loop bodies are branch-free and vectorise.
//
// Included only by kernels_for_isa.cpp, once per instruction set, inside that set's namespace.
// Operand order of each TensorList: sgd/adagrad {param, grad, state}; rmsprop {param, grad,
// square_avg, momentum_buffer, grad_avg}; adam {param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq}.
// Unused operands are nullptr. Each update returns found_inf: true when skip_nonfinite found a
// non-finite gradient and nothing was written (grad_scale.h).
#pragma once

#include "cpu/parallel.h"
#include "cpu/static_switch.h"
#include "cpu/tensor_list.h"
#include "fastopt/fastopt.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// The chunk heads (parallel.h, make_chunks) that start every chunk of tensor k on a cache line of
// its operand `operand` (the parameter for the updates: every operand is aligned with it when all
// come from one allocator, NumPy's or torch's). Only large calls are chunked, so small ones skip it.
template <typename T, int N>
std::vector<int64_t> operand_heads(const TensorList<T, N>& tensors, int operand) {
  std::vector<int64_t> heads;
  if (total_elements(tensors.sizes) < kParallelThreshold) return heads;
  heads.reserve(tensors.ptrs.size());
  for (const auto& ptrs : tensors.ptrs) heads.push_back(elements_to_alignment(ptrs[size_t(operand)]));
  return heads;
}

// for_each_chunk over the elements of an update, its chunks on the parameter's cache lines.
template <typename T, int N, typename Body>
void for_each_update_chunk(const TensorList<T, N>& tensors, Body&& body) {
  for_each_chunk(tensors.sizes, body, operand_heads(tensors, 0));
}

// The pre-pass of skip_nonfinite: true when any unscaled gradient (operand 1 of every tensor) is
// NaN or +-Inf. It reads every gradient, on the same chunks and threads as the updates, and writes
// nothing. The flag is an integer OR, so the loop vectorises.
template <typename T, int N>
bool any_nonfinite_grad(const TensorList<T, N>& tensors, double grad_scale) {
  const T scale = T(grad_scale);
  bool found = false;
  with_flags(
      [&](auto SCALED) {
        found = any_chunk(tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          const T* __restrict g = tensors.ptrs[k][1];
          unsigned bad = 0;
          for (int64_t i = begin; i < end; ++i) {
            bad |= unsigned(!is_finite_(unscale_grad<SCALED.value>(g[i], scale)));
          }
          return bad != 0;
        }, operand_heads(tensors, 1));
      },
      grad_scale != 1.0);
  return found;
}

// found_inf of an update call: its pre-pass ran and found a non-finite gradient, so the caller
// must write nothing. The update loops below take SCALED as one more compile-time flag, false
// when grad_scale == 1, so an unscaled call divides nothing and runs exactly the code it did before.
template <typename T, int N>
bool skip_call(const TensorList<T, N>& tensors, const GradScaling& scaling) {
  return scaling.skip_nonfinite && any_nonfinite_grad(tensors, scaling.grad_scale);
}

// The found_inf pre-pass alone (operand 0 unused), for a step spread over several kernel calls.
template <typename T>
bool nonfinite(const TensorList<T, 2>& tensors, double grad_scale) {
  return any_nonfinite_grad(tensors, grad_scale);
}

template <typename T>
bool sgd(const TensorList<T, 3>& tensors, const SgdHyper& hyper) {
  if (skip_call(tensors, hyper.scaling)) return true;
  const SgdScalars<T> s = sgd_scalars<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  const bool momentum = hyper.momentum != 0.0;
  with_flags(
      [&](auto MOMENTUM, auto NESTEROV, auto FIRST, auto SCALED) {
        for_each_update_chunk(tensors, [&](int32_t k, int64_t begin, int64_t end) {
          T* __restrict p = tensors.ptrs[k][0];
          const T* __restrict g = tensors.ptrs[k][1];
          const T gs = scale;  // a local copy: a captured reference could alias the arrays (no SIMD)
          T* __restrict b = tensors.ptrs[k][2];
          for (int64_t i = begin; i < end; ++i) {
            T pi = p[i];
            T bi = 0;
            if constexpr (MOMENTUM.value && !FIRST.value) bi = b[i];
            sgd_update<MOMENTUM.value, NESTEROV.value, FIRST.value>(pi, unscale_grad<SCALED.value>(g[i], gs),
                                                                    bi, s);
            p[i] = pi;
            if constexpr (MOMENTUM.value) b[i] = bi;
          }
        });
      },
      momentum, momentum && hyper.nesterov, momentum && hyper.step == 1, hyper.scaling.grad_scale != 1.0);
  return false;
}

template <typename T>
bool adagrad(const TensorList<T, 3>& tensors, const AdagradHyper& hyper) {
  if (skip_call(tensors, hyper.scaling)) return true;
  const AdagradScalars<T> s = adagrad_scalars<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  with_flags(
      [&](auto SCALED) {
        for_each_update_chunk(tensors, [&](int32_t k, int64_t begin, int64_t end) {
          T* __restrict p = tensors.ptrs[k][0];
          const T* __restrict g = tensors.ptrs[k][1];
          const T gs = scale;  // a local copy: a captured reference could alias the arrays (no SIMD)
          T* __restrict sum = tensors.ptrs[k][2];
          for (int64_t i = begin; i < end; ++i) {
            T pi = p[i], si = sum[i];
            adagrad_update(pi, unscale_grad<SCALED.value>(g[i], gs), si, s);
            p[i] = pi;
            sum[i] = si;
          }
        });
      },
      hyper.scaling.grad_scale != 1.0);
  return false;
}

template <typename T>
bool rmsprop(const TensorList<T, 5>& tensors, const RmspropHyper& hyper) {
  if (skip_call(tensors, hyper.scaling)) return true;
  const RmspropScalars<T> s = rmsprop_scalars<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  with_flags(
      [&](auto CENTERED, auto MOMENTUM, auto SCALED) {
        for_each_update_chunk(tensors, [&](int32_t k, int64_t begin, int64_t end) {
          T* __restrict p = tensors.ptrs[k][0];
          const T* __restrict g = tensors.ptrs[k][1];
          const T gs = scale;  // a local copy: a captured reference could alias the arrays (no SIMD)
          T* __restrict sq = tensors.ptrs[k][2];
          T* __restrict b = tensors.ptrs[k][3];
          T* __restrict ga = tensors.ptrs[k][4];
          for (int64_t i = begin; i < end; ++i) {
            T pi = p[i], sqi = sq[i], bi = 0, gai = 0;
            if constexpr (MOMENTUM.value) bi = b[i];
            if constexpr (CENTERED.value) gai = ga[i];
            rmsprop_update<CENTERED.value, MOMENTUM.value>(pi, unscale_grad<SCALED.value>(g[i], gs), sqi, bi,
                                                           gai, s);
            p[i] = pi;
            sq[i] = sqi;
            if constexpr (MOMENTUM.value) b[i] = bi;
            if constexpr (CENTERED.value) ga[i] = gai;
          }
        });
      },
      hyper.centered, hyper.momentum > 0.0, hyper.scaling.grad_scale != 1.0);
  return false;
}

template <typename T>
bool adam(const TensorList<T, 5>& tensors, const AdamHyper& hyper) {
  if (skip_call(tensors, hyper.scaling)) return true;
  const AdamScalars<T> s = adam_scalars<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  with_flags(
      [&](auto AMSGRAD, auto DECOUPLED, auto SCALED) {
        for_each_update_chunk(tensors, [&](int32_t k, int64_t begin, int64_t end) {
          T* __restrict p = tensors.ptrs[k][0];
          const T* __restrict g = tensors.ptrs[k][1];
          const T gs = scale;  // a local copy: a captured reference could alias the arrays (no SIMD)
          T* __restrict m = tensors.ptrs[k][2];
          T* __restrict v = tensors.ptrs[k][3];
          T* __restrict vmax = tensors.ptrs[k][4];
          for (int64_t i = begin; i < end; ++i) {
            T pi = p[i], mi = m[i], vi = v[i], vmaxi = 0;
            if constexpr (AMSGRAD.value) vmaxi = vmax[i];
            adam_update<AMSGRAD.value, DECOUPLED.value>(pi, unscale_grad<SCALED.value>(g[i], gs), mi, vi, vmaxi,
                                                        s);
            p[i] = pi;
            m[i] = mi;
            v[i] = vi;
            if constexpr (AMSGRAD.value) vmax[i] = vmaxi;
          }
        });
      },
      hyper.amsgrad, hyper.decoupled, hyper.scaling.grad_scale != 1.0);
  return false;
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
