// The table of every element-wise rule over bfloat16 storage (rule_bf16_loops.h) for one instruction
// set: compiled, as kernels_for_isa.cpp, once per set with that set's flags and FASTOPT_ISA_NS, whose
// table() holds what this returns.
#include "cpu/kernel_table.h"
#include "cpu/rule_bf16_loops.h"

#ifndef FASTOPT_ISA_NS
#error "FASTOPT_ISA_NS must name the instruction set (set by CMakeLists.txt)"
#endif

namespace fastopt::cpu::FASTOPT_ISA_NS {

namespace {

template <typename... Rules>
RuleBf16Table<RuleList<Rules...>> table_of(RuleList<Rules...>) {
  return {{rule_bf16_of<Rules>()...}};
}

}  // namespace

RuleBf16Table<Registry> rule_bf16_table() { return table_of(Registry{}); }

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
