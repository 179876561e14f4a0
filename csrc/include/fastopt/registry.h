// Every optimizer described as a rule (rule.h), in one list that every layer reads: the CPU kernel
// table (one loop per rule, variant and instruction set), the CUDA launches, the Python functions
// fastopt.<name>_ and the C ABI's fastopt_update("<name>", ...). Adding an optimizer: its header
// here and its name in the list.
#pragma once

#include <utility>

#include "fastopt/adadelta.h"
#include "fastopt/adamax.h"
#include "fastopt/asgd.h"
#include "fastopt/lamb.h"
#include "fastopt/lion.h"
#include "fastopt/muon.h"
#include "fastopt/nadam.h"
#include "fastopt/radam.h"
#include "fastopt/rprop.h"

namespace fastopt {

template <typename... Rules>
struct RuleList {
  static constexpr int size = int(sizeof...(Rules));
};

using Registry = RuleList<LionRule, AdamaxRule, AdadeltaRule, RadamRule, NadamRule, RpropRule, AsgdRule, LambRule,
                         MuonMomentumRule, MuonApplyRule>;

// f(Rule*) (a null pointer of each rule's type) for every rule of the list, in order.
template <typename... Rules, typename F>
void for_each_rule(RuleList<Rules...>, F&& f) {
  (f(static_cast<Rules*>(nullptr)), ...);
}

// Calls f(std::integral_constant<int, v>) for the runtime value v in [0, N): the variant of a rule as
// a compile-time constant.
template <int N, typename F, int... I>
void with_variant_impl(int v, F&& f, std::integer_sequence<int, I...>) {
  ((v == I ? (f(std::integral_constant<int, I>{}), true) : false) || ...);
}

template <int N, typename F>
void with_variant(int v, F&& f) {
  with_variant_impl<N>(v, f, std::make_integer_sequence<int, N>{});
}

}  // namespace fastopt
