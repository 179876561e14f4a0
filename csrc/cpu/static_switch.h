// Turns runtime flags into compile-time constants so the hot loops carry no branches:
//   with_flags([&](auto amsgrad, auto decoupled) { loop<amsgrad.value, decoupled.value>(); }, a, d);
#pragma once

#include <type_traits>
#include <utility>

namespace fastopt::cpu {

template <typename Fn>
__attribute__((always_inline)) inline void with_flags(Fn&& fn) {
  fn();
}

// (The binding lambdas always inline: they only dispatch, and GCC's growth limits left some outlined once
// SGD had five flags, each then a function of its own holding no loop.)
template <typename Fn, typename... Rest>
__attribute__((always_inline)) inline void with_flags(Fn&& fn, bool flag, Rest... rest) {
  auto bind = [&](auto constant) __attribute__((always_inline)) {
    with_flags([&](auto... more) __attribute__((always_inline)) { fn(constant, more...); }, rest...);
  };
  if (flag) {
    bind(std::true_type{});
  } else {
    bind(std::false_type{});
  }
}

}  // namespace fastopt::cpu
