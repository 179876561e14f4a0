// Element loops of the optimizer updates. Each loop reads its operands into locals, applies the
// shared per-element rule and writes back: one pass over memory, no temporaries. The flags are
// compile-time constants (static_switch.h), so the loop bodies are branch-free and vectorise.
//
// Included only by kernels_for_isa.cpp, once per instruction set, inside that set's namespace.
// Operand order of each TensorList: sgd/adagrad {param, grad, state}; rmsprop {param, grad,
// square_avg, momentum_buffer, grad_avg}; adam {param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq}.
// Unused operands are nullptr.
#pragma once

#include "cpu/parallel.h"
#include "cpu/static_switch.h"
#include "cpu/tensor_list.h"
#include "fastopt/fastopt.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

template <typename T>
void sgd(const TensorList<T, 3>& tensors, const SgdHyper& hyper) {
  const SgdScalars<T> s = sgd_scalars<T>(hyper);
  const bool momentum = hyper.momentum != 0.0;
  with_flags(
      [&](auto MOMENTUM, auto NESTEROV, auto FIRST) {
        for_each_chunk(tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          T* __restrict p = tensors.ptrs[k][0];
          const T* __restrict g = tensors.ptrs[k][1];
          T* __restrict b = tensors.ptrs[k][2];
          for (int64_t i = begin; i < end; ++i) {
            T pi = p[i];
            T bi = 0;
            if constexpr (MOMENTUM.value && !FIRST.value) bi = b[i];
            sgd_update<MOMENTUM.value, NESTEROV.value, FIRST.value>(pi, g[i], bi, s);
            p[i] = pi;
            if constexpr (MOMENTUM.value) b[i] = bi;
          }
        });
      },
      momentum, momentum && hyper.nesterov, momentum && hyper.step == 1);
}

template <typename T>
void adagrad(const TensorList<T, 3>& tensors, const AdagradHyper& hyper) {
  const AdagradScalars<T> s = adagrad_scalars<T>(hyper);
  for_each_chunk(tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
    T* __restrict p = tensors.ptrs[k][0];
    const T* __restrict g = tensors.ptrs[k][1];
    T* __restrict sum = tensors.ptrs[k][2];
    for (int64_t i = begin; i < end; ++i) {
      T pi = p[i], si = sum[i];
      adagrad_update(pi, g[i], si, s);
      p[i] = pi;
      sum[i] = si;
    }
  });
}

template <typename T>
void rmsprop(const TensorList<T, 5>& tensors, const RmspropHyper& hyper) {
  const RmspropScalars<T> s = rmsprop_scalars<T>(hyper);
  with_flags(
      [&](auto CENTERED, auto MOMENTUM) {
        for_each_chunk(tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          T* __restrict p = tensors.ptrs[k][0];
          const T* __restrict g = tensors.ptrs[k][1];
          T* __restrict sq = tensors.ptrs[k][2];
          T* __restrict b = tensors.ptrs[k][3];
          T* __restrict ga = tensors.ptrs[k][4];
          for (int64_t i = begin; i < end; ++i) {
            T pi = p[i], sqi = sq[i], bi = 0, gai = 0;
            if constexpr (MOMENTUM.value) bi = b[i];
            if constexpr (CENTERED.value) gai = ga[i];
            rmsprop_update<CENTERED.value, MOMENTUM.value>(pi, g[i], sqi, bi, gai, s);
            p[i] = pi;
            sq[i] = sqi;
            if constexpr (MOMENTUM.value) b[i] = bi;
            if constexpr (CENTERED.value) ga[i] = gai;
          }
        });
      },
      hyper.centered, hyper.momentum > 0.0);
}

template <typename T>
void adam(const TensorList<T, 5>& tensors, const AdamHyper& hyper) {
  const AdamScalars<T> s = adam_scalars<T>(hyper);
  with_flags(
      [&](auto AMSGRAD, auto DECOUPLED) {
        for_each_chunk(tensors.sizes, [&](int32_t k, int64_t begin, int64_t end) {
          T* __restrict p = tensors.ptrs[k][0];
          const T* __restrict g = tensors.ptrs[k][1];
          T* __restrict m = tensors.ptrs[k][2];
          T* __restrict v = tensors.ptrs[k][3];
          T* __restrict vmax = tensors.ptrs[k][4];
          for (int64_t i = begin; i < end; ++i) {
            T pi = p[i], mi = m[i], vi = v[i], vmaxi = 0;
            if constexpr (AMSGRAD.value) vmaxi = vmax[i];
            adam_update<AMSGRAD.value, DECOUPLED.value>(pi, g[i], mi, vi, vmaxi, s);
            p[i] = pi;
            m[i] = mi;
            v[i] = vi;
            if constexpr (AMSGRAD.value) vmax[i] = vmaxi;
          }
        });
      },
      hyper.amsgrad, hyper.decoupled);
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
