// The table of every element-wise rule over 8-bit blockwise state (rule_int8_loops.h) for one
// instruction set: compiled, as kernels_for_isa.cpp, once per set with that set's flags and
// FASTOPT_ISA_NS, whose table() holds what this returns.
#include <type_traits>

#include "cpu/kernel_table.h"
#include "cpu/rule_int8_loops.h"

#ifndef FASTOPT_ISA_NS
#error "FASTOPT_ISA_NS must name the instruction set (set by CMakeLists.txt)"
#endif

namespace fastopt::cpu::FASTOPT_ISA_NS {

RuleInt8Table<Registry> rule_int8_table() {
  return per_rule<RuleInt8Fn>(Registry{},
                                [](auto* rule) { return rule_int8_of<std::remove_pointer_t<decltype(rule)>>(); });
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
