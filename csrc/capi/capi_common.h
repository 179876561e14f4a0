// The C ABI's plumbing, shared by its classic entries (c_api.cpp) and the generic ones over the
// registered rules (c_api_rules.cpp): errors as a CError exception turned into a status code and a
// thread-local message at the boundary (guard), hyperparameter messages, and the pointer list check
// (NULL, sizes, overlap) that fills the kernels' TensorList. Nothing is thrown across the C ABI.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#include "common/hyper_rules.h"
#include "common/overlap.h"
#include "cpu/kernel_table.h"
#include "fastopt/c_api.h"

namespace fastopt::capi {

// (inline: one message per thread for the whole library, whichever file sets it)
inline thread_local std::string last_error;

struct CError {
  int32_t status;
  std::string message;
};

// Runs body() and returns its status; every exception becomes a status and a message.
template <typename Body>
int32_t guard(Body&& body) noexcept {
  try {
    last_error.clear();
    body();
    return FASTOPT_OK;
  } catch (const CError& e) {
    last_error = e.message;
    return e.status;
  } catch (const std::exception& e) {
    last_error = std::string("internal error: ") + e.what();
  } catch (...) {
    last_error = "internal error";
  }
  return FASTOPT_ERROR_INTERNAL;
}

// Doubles as C shows them (%.17g is exact; "nan", "inf").
inline std::string show(double value) {
  if (std::isnan(value)) return "nan";  // whatever its sign bit
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", value);
  return text;
}

inline void require(const rules::Check& check) {
  if (check) throw CError{FASTOPT_ERROR_HYPERPARAMETER, rules::describe(*check, show)};
}

// The range of the arithmetic the kernels of element type T compute in (rules::check_range).
template <typename T>
rules::MathRange range_of() {
  return rules::math_range(std::is_same_v<T, double>);
}

// One operand of an update: its name in messages (plural for lists), its pointer array, whether
// the call uses it (unused optional states stay nullptr in the list).
template <typename T>
struct Operand {
  const char* name;
  T* const* ptrs;
  bool used;
};

// Byte range of one array, for the overlap check.
struct Span {
  uintptr_t begin, end;
  std::string name;
  bool written = true;  // false: the call only reads it (a gradient)
};

// Operand 1 of every update is the gradient, the one operand an update reads without writing (the
// same order as the registered rules': fastopt/rule.h).
constexpr int kGradOperand = 1;

inline std::string element_name(const char* name, bool single, int64_t k) {
  return single ? std::string(name) : std::string(name) + "[" + std::to_string(k) + "]";
}

// Refuses two spans that share a byte where either is written (spans of zero bytes never do): only
// read arrays, the gradients, may share memory (common/overlap.h).
inline void check_disjoint(std::vector<Span> spans) {
  if (const auto pair = find_shared_write(spans)) {
    throw CError{FASTOPT_ERROR_OVERLAP, spans[pair->second].name + " overlaps " + spans[pair->first].name +
                                            "; an array the call writes must be a separate buffer (only "
                                            "gradients, which it reads, may share memory)"};
  }
}

// Checks the list and fills the kernels' TensorList. `single`: names without an index.
template <typename T, int N>
cpu::TensorList<T, N> take_list(int64_t count, const int64_t* sizes, const std::array<Operand<T>, N>& ops,
                                bool single) {
  if (count < 0) throw CError{FASTOPT_ERROR_SIZE, "count must be >= 0, got " + std::to_string(count)};
  cpu::TensorList<T, N> list;
  if (count == 0) return list;
  if (sizes == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, single ? "n is NULL" : "sizes is NULL"};
  for (const Operand<T>& op : ops) {
    if (op.used && op.ptrs == nullptr) {
      throw CError{FASTOPT_ERROR_NULL_POINTER, std::string(op.name) + " is NULL"};
    }
  }
  std::vector<Span> spans;
  list.ptrs.reserve(size_t(count));
  list.sizes.reserve(size_t(count));
  for (int64_t k = 0; k < count; ++k) {
    const int64_t n = sizes[k];
    if (n < 0) {
      throw CError{FASTOPT_ERROR_SIZE, (single ? std::string("n") : "sizes[" + std::to_string(k) + "]") +
                                           " must be >= 0, got " + std::to_string(n)};
    }
    std::array<T*, N> row{};
    for (int j = 0; j < N; ++j) {
      if (!ops[j].used) continue;
      T* p = ops[j].ptrs[k];
      if (p == nullptr && n > 0) {
        throw CError{FASTOPT_ERROR_NULL_POINTER, element_name(ops[j].name, single, k) + " is NULL"};
      }
      row[j] = p;
      if (n > 0) {
        const auto begin = reinterpret_cast<uintptr_t>(p);
        spans.push_back(
            {begin, begin + uintptr_t(n) * sizeof(T), element_name(ops[j].name, single, k), j != kGradOperand});
      }
    }
    list.add(row, n);
  }
  check_disjoint(std::move(spans));
  return list;
}

template <typename T>
T* const* mut(const T* const* p) {
  return const_cast<T* const*>(p);
}

}  // namespace fastopt::capi
