// Every element-wise rule (fastopt/registry.h) over 8-bit blockwise state (fastopt/quant8.h, issue 18):
// float32 params and grads, each state operand as uint8 codes plus one float32 absmax per block of
// kQuantBlock elements, in the map its binding chose (signed, or unsigned for an operand the rule
// declares non_negative). As the classic four's 8-bit loops (int8_state_loops.h): a block at a time,
// each state operand the variant uses is read back into a float32 buffer (map[code] * absmax), the
// float32 kernel's own element loop (rule_loops.h's rule_elements) runs over the block, the params in
// place, and each state operand is quantised again. Blocks are independent and a thread takes whole
// blocks: every thread count and instruction set writes the same bits.
//
// Rules with per-tensor sums (LAMB's norms) and rules without state (Muon's apply pass) have no entry
// here (the table holds nullptr; the binding refuses 8-bit state for them by name).
//
// Included only by rules_int8_for_isa.cpp, once per instruction set, inside that set's namespace.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "cpu/int8_state_call.h"
#include "cpu/int8_state_loops.h"
#include "cpu/quant8_blocks.h"
#include "cpu/rule_loops.h"
#include "fastopt/tensor_sums.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// Rule operand J >= 2 is state slot J - 2 of the call (int8_state_call.h).
constexpr int state_slot(size_t j) { return int(j) - 2; }

// A rule with state that fits the call's slots (Muon's apply pass keeps none: no 8-bit form).
template <typename Rule>
constexpr bool has_int8_form = Rule::kOperands > 2 && Rule::kOperands - 2 <= kInt8StateSlots;

// Operand J of block `block` (elements [begin, begin + n)) of tensor t: the params and the gradient in
// place, a state operand the variant uses read back into its buffer, nullptr for the others.
template <unsigned kUsed, size_t J>
inline float* int8_block_operand(const Int8StateTensor& t, const Int8StateCall& call, int64_t block, int64_t begin,
                                 int64_t n, float (&buffers)[kInt8StateSlots][kQuantBlock]) {
  if constexpr (J == 0) {
    return t.param + begin;
  } else if constexpr (J == 1) {
    return const_cast<float*>(t.grad) + begin;  // (never written: rule_elements' written mask)
  } else {
    constexpr int s = state_slot(J);
    if (!(kUsed & operand_bit(int(J)))) return nullptr;
    dequantise_block(t.state[s].codes + begin, n, call.maps[s], t.state[s].absmax[block], buffers[s]);
    return buffers[s];
  }
}

template <unsigned kUsed, size_t J>
inline void int8_block_store(const Int8StateTensor& t, const Int8StateCall& call, int64_t block, int64_t begin,
                             int64_t n, const float (&buffers)[kInt8StateSlots][kQuantBlock]) {
  if constexpr (J >= 2) {
    constexpr int s = state_slot(J);
    if (kUsed & operand_bit(int(J))) {
      t.state[s].absmax[block] = quantise_block(buffers[s], n, call.maps[s], t.state[s].codes + begin);
    }
  }
}

// One block of tensor t: read back, the float32 rule loop, quantise.
template <typename Rule, int V, bool SCALED, size_t... J>
inline void rule_int8_block(std::index_sequence<J...> operands, const Int8StateCall& call, const Int8StateTensor& t,
                            int64_t block, float gs, const typename Rule::template Consts<float>& c) {
  constexpr unsigned used = Rule::used(V);
  const int64_t begin = block * kQuantBlock, n = std::min(kQuantBlock, t.size - begin);
  alignas(64) float buffers[kInt8StateSlots][kQuantBlock];
  float* block_of[] = {int8_block_operand<used, J>(t, call, block, begin, n, buffers)...};
  rule_elements<Rule, V, SCALED, float>(operands, n, gs, c, block_of[J]...);
  (int8_block_store<used, J>(t, call, block, begin, n, buffers), ...);
}

// The table's entry of Rule: found_inf, as the other updates return it.
template <typename Rule>
bool rule_int8(const Int8StateCall& call, const typename Rule::Hyper& hyper) {
  static_assert(has_int8_form<Rule>, "no state, or more state operands than Int8StateCall holds");
  return int8_state_update(call, hyper, [&](float scale, bool scaled, bool threads) {
    const typename Rule::template Consts<float> c = Rule::template consts<float>(hyper);
    constexpr auto operands = std::make_index_sequence<size_t(Rule::kOperands)>{};
    with_variant<Rule::kVariants>(Rule::variant(hyper), [&](auto V) {
      with_flags(
          [&](auto SCALED) {
            for_each_quant_block(call.tensors, threads, [&](size_t k, int64_t b) {
              rule_int8_block<Rule, V.value, SCALED.value>(operands, call, call.tensors[k], b, scale, c);
            });
          },
          scaled);
    });
  });
}

template <typename Rule>
constexpr bool (*rule_int8_of())(const Int8StateCall&, const typename Rule::Hyper&) {
  if constexpr (has_tensor_sums<Rule> || !has_int8_form<Rule>) {
    return nullptr;
  } else {
    return &rule_int8<Rule>;
  }
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
