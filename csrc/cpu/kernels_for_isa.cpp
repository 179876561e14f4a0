// The kernel table of one instruction set. CMake compiles this file once per set with that set's
// flags and FASTOPT_ISA_NS = baseline | avx2 | avx512, which names the namespace the loops live in
// and the function that returns the table.
#include "cpu/kernel_table.h"
#include "cpu/loss_loops.h"
#include "cpu/optim_loops.h"
#include "cpu/rule_loops.h"
#include "cpu/tensor_sum_loops.h"
#include "cpu/adafactor_loops.h"
#include "cpu/adam_bf16_loops.h"
#include "cpu/bf16_state_loops.h"
#include "cpu/adam_int8_loops.h"
#include "cpu/int8_state_loops.h"

#ifndef FASTOPT_ISA_NS
#error "FASTOPT_ISA_NS must name the instruction set (set by CMakeLists.txt)"
#endif

#define FASTOPT_STR2(x) #x
#define FASTOPT_STR(x) FASTOPT_STR2(x)

namespace fastopt::cpu {

namespace FASTOPT_ISA_NS {

template <typename T, typename... Rules>
RuleTable<T, RuleList<Rules...>> rule_table(RuleList<Rules...>) {
  return {{rule_update_of<Rules, T>()...}};
}

// The rules over bfloat16 storage, compiled apart (rules_bf16_for_isa.cpp: a second object per set, so
// that the two build side by side).
RuleBf16Table<Registry> rule_bf16_table();
// ... and over 8-bit state (rules_int8_for_isa.cpp, a third object).
RuleInt8Table<Registry> rule_int8_table();

template <typename T>
TypedKernels<T> typed_kernels() {
  return {&sgd<T>,
          &adagrad<T>,
          &rmsprop<T>,
          &adam<T>,
          &softmax_cross_entropy<T, int32_t>,
          &softmax_cross_entropy<T, int64_t>,
          &multiclass_svm_loss<T, int32_t>,
          &multiclass_svm_loss<T, int64_t>,
          &softmax<T>,
          &penalty<T>,
          &exp_array<T>,
          &probe_add<T>,
          &nonfinite<T>,
          &adafactor<T>,
          rule_table<T>(Registry{})};
}

const KernelTable& table() {
  static const KernelTable instance{FASTOPT_STR(FASTOPT_ISA_NS), typed_kernels<float>(),
                                    typed_kernels<double>(), &adam_bf16, &sgd_bf16,
                                    &adagrad_bf16, &rmsprop_bf16, rule_bf16_table(), &adam_int8,
                                    &sgd_int8, &adagrad_int8, &rmsprop_int8, rule_int8_table(),
                                    &quantize8, &dequantize8, half_kernels<F16>(),
                                    half_kernels<Bf16>()};
  return instance;
}

}  // namespace FASTOPT_ISA_NS

}  // namespace fastopt::cpu
