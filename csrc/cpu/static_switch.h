// Turns runtime flags into compile-time constants so the hot loops carry no branches:
//   with_flags([&](auto amsgrad, auto decoupled) { loop<amsgrad.value, decoupled.value>(); }, a, d);
#pragma once

#include <type_traits>
#include <utility>

namespace fastopt::cpu {

template <typename Fn>
void with_flags(Fn&& fn) {
  fn();
}

template <typename Fn, typename... Rest>
void with_flags(Fn&& fn, bool flag, Rest... rest) {
  auto bind = [&](auto constant) {
    with_flags([&](auto... more) { fn(constant, more...); }, rest...);
  };
  if (flag) {
    bind(std::true_type{});
  } else {
    bind(std::false_type{});
  }
}

}  // namespace fastopt::cpu
