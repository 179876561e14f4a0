// The one element loop of every optimizer described as a rule (fastopt/rule.h, registry.h): read
// the operands the variant uses into locals, unscale the gradient, apply the rule, write back the
// operands it changes. One pass over memory, no temporaries, branch-free (the variant and the
// scaling are compile-time constants), so it vectorises (tests/kernels/test_loop_vectorised.py checks it).
//
// Included only by kernels_for_isa.cpp, once per instruction set, inside that set's namespace.
#pragma once

#include <cstddef>
#include <utility>

#include "cpu/optim_loops.h"
#include "fastopt/registry.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// The operands as __restrict function parameters (one per operand, from the index pack): GCC trusts
// restrict there, and vectorises without run-time overlap checks (see optim_loops.h). The gradient is
// never written (bit 1 is not in the written mask), so its const is only dropped in the type.
template <typename T, size_t>
using RestrictPtr = T* __restrict;

template <typename Rule, int V, bool SCALED, typename T, size_t... J>
inline void rule_elements(std::index_sequence<J...>, int64_t n, T gs, const typename Rule::template Consts<T> c,
                          RestrictPtr<T, J>... operand) {
  constexpr unsigned used = Rule::used(V);
  constexpr unsigned written = used & ~operand_bit(1);
  FASTOPT_LINE_LOOP
  for (int64_t i = 0; i < n; ++i) {
    T e[Rule::kOperands] = {((used & operand_bit(int(J))) ? operand[i] : T(0))...};
    e[1] = unscale_grad<SCALED>(e[1], gs);
    Rule::template apply<V>(c, e);
    (((written & operand_bit(int(J))) ? void(operand[i] = e[J]) : void()), ...);
  }
}

template <typename Rule, int V, bool SCALED, typename T, size_t... J>
inline void rule_chunk(std::index_sequence<J...> operands, const TensorList<T, Rule::kOperands>& tensors, int32_t k,
                       int64_t begin, int64_t end, T gs, const typename Rule::template Consts<T>& c) {
  // a cache line at a time, up or down (line_order.h)
  constexpr unsigned written = Rule::used(V) & ~operand_bit(1);
  constexpr int64_t line = kLineElements<T>;
  const bool down = lines_down((end - begin) / line, tensors.ptrs[size_t(k)], written);
  for_each_line<line>(end - begin, down, [&](int64_t at, int64_t count) {
    rule_elements<Rule, V, SCALED>(operands, count, gs, c, operand_as<T>(tensors, k, int(J), begin + at)...);
  });
}

// One call of a rule over a list of tensors; returns found_inf (optim_loops.h's skip_call).
template <typename Rule, typename T>
bool rule_update(const TensorList<T, Rule::kOperands>& tensors, const typename Rule::Hyper& hyper) {
  if (skip_call<T, T>(tensors, hyper.scaling)) return true;
  const typename Rule::template Consts<T> c = Rule::template consts<T>(hyper);
  const T scale = T(hyper.scaling.grad_scale);
  constexpr auto operands = std::make_index_sequence<size_t(Rule::kOperands)>{};
  with_variant<Rule::kVariants>(Rule::variant(hyper), [&](auto V) {
    with_flags(
        [&](auto SCALED) {
          for_each_update_chunk<T>(tensors, [&](int32_t k, int64_t begin, int64_t end) {
            rule_chunk<Rule, V.value, SCALED.value>(operands, tensors, k, begin, end, scale, c);
          });
        },
        hyper.scaling.grad_scale != 1.0);
  });
  return false;
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
