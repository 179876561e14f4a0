// The C ABI's Adafactor entries (fastopt/c_api.h): fastopt_adafactor_f32/_f64, the Python function
// fastopt.adafactor_ (csrc/python/adafactor_bindings.cpp) with a shape per tensor in place of the
// arrays' own: the same hyperparameter rules (common/adafactor_checks.h), the same kernel table entry.
// Everything is checked before the kernel writes anything.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "capi/capi_common.h"
#include "common/adafactor_checks.h"
#include "cpu/adafactor_tensor.h"
#include "fastopt/adafactor.h"
#include "fastopt/c_api.h"

namespace fastopt::capi {

namespace {

constexpr int32_t kMaxDims = 64;

std::string at(const char* name, int64_t k) { return std::string(name) + "[" + std::to_string(k) + "]"; }

// The product of n sizes; FASTOPT_ERROR_SIZE for a negative one or a product past what an array of T can hold.
template <typename T>
int64_t checked_product(const int64_t* sizes, int32_t n, int64_t k, int64_t first) {
  int64_t product = 1;
  for (int32_t i = 0; i < n; ++i) {
    const int64_t s = sizes[i];
    if (s < 0) {
      throw CError{FASTOPT_ERROR_SIZE, at("shapes", first + i) + " (dimension " + std::to_string(i) + " of tensor " +
                                           std::to_string(k) + ") must be >= 0, got " + std::to_string(s)};
    }
    if (__builtin_mul_overflow(product, s, &product) || product > INT64_MAX / int64_t(sizeof(T))) {
      throw CError{FASTOPT_ERROR_SIZE, "tensor " + std::to_string(k) + " has more elements than memory can hold"};
    }
  }
  return product;
}

// Pointer k of an operand list: NULL where the array has no element or the list is not read for it.
template <typename T>
T* member(T* const* list, const char* name, int64_t k, int64_t elements, const char* why,
          std::vector<Span>& spans, bool written) {
  if (elements == 0) return nullptr;
  if (list == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, std::string(name) + " is NULL but tensor " +
                                                                    std::to_string(k) + " " + why};
  T* p = list[k];
  if (p == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, at(name, k) + " is NULL (tensor " + std::to_string(k) +
                                                                 " " + why + ")"};
  const auto begin = reinterpret_cast<uintptr_t>(p);
  spans.push_back({begin, begin + uintptr_t(elements) * sizeof(T), at(name, k), written});
  return p;
}

template <typename T>
void adafactor(int64_t count, const int32_t* ndims, const int64_t* shapes, T* const* params, const T* const* grads,
               T* const* row_vars, T* const* col_vars, T* const* variances, const AdafactorHyper& hyper) {
  if (count < 0) throw CError{FASTOPT_ERROR_SIZE, "count must be >= 0, got " + std::to_string(count)};
  require(rules::check(hyper));
  if (count == 0) return;
  if (ndims == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, "ndims is NULL"};
  std::vector<cpu::AdafactorTensor<T>> list;
  list.reserve(size_t(count));
  std::vector<Span> spans;
  int64_t first = 0;  // the index in shapes of tensor k's first size
  for (int64_t k = 0; k < count; ++k) {
    const int32_t nd = ndims[k];
    if (nd < 0 || nd > kMaxDims) {
      throw CError{FASTOPT_ERROR_SIZE, at("ndims", k) + " must be in [0, " + std::to_string(kMaxDims) + "], got " +
                                           std::to_string(nd)};
    }
    if (nd > 0 && shapes == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, "shapes is NULL"};
    const int64_t* shape = shapes + first;
    const int64_t n = checked_product<T>(shape, nd, k, first);
    cpu::AdafactorTensor<T> t{nullptr, nullptr, nullptr, nullptr, nullptr, 1, 1, n, nd >= 2};
    int64_t row_elements = 0, col_elements = 0;  // (factored) B x R and B x C: one may be > 0 when n is 0
    if (t.factored) {
      t.rows = shape[nd - 2];
      t.cols = shape[nd - 1];
      t.batch = checked_product<T>(shape, nd - 2, k, first);
      row_elements = checked_product<T>(shape, nd - 1, k, first);
      if (__builtin_mul_overflow(t.batch, t.cols, &col_elements) || col_elements > INT64_MAX / int64_t(sizeof(T))) {
        throw CError{FASTOPT_ERROR_SIZE, "tensor " + std::to_string(k) + "'s col_vars have more elements than memory "
                                         "can hold"};
      }
    }
    const char* why = t.factored ? "has ndim >= 2 (factored: row_vars and col_vars)" : "has ndim < 2 (variances)";
    t.param = member(params, "params", k, n, "has elements", spans, true);
    t.grad = member(mut(grads), "grads", k, n, "has elements", spans, false);
    if (t.factored) {
      t.row_var = member(row_vars, "row_vars", k, row_elements, why, spans, true);
      t.col_var = member(col_vars, "col_vars", k, col_elements, why, spans, true);
    } else {
      t.variance = member(variances, "variances", k, n, why, spans, true);
    }
    list.push_back(t);
    first += nd;
  }
  check_disjoint(std::move(spans));
  cpu::kernels().of<T>().adafactor(list, hyper);
}

}  // namespace

}  // namespace fastopt::capi

using namespace fastopt;
using namespace fastopt::capi;

extern "C" {

#define FASTOPT_DEFINE_ADAFACTOR(T, SUFFIX)                                                                       \
  int32_t fastopt_adafactor_##SUFFIX(int64_t count, const int32_t* ndims, const int64_t* shapes, T* const* params, \
                                     const T* const* grads, T* const* row_vars, T* const* col_vars,                \
                                     T* const* variances, int64_t step, double lr, double beta2_decay, double eps1, \
                                     double eps2, double d, double weight_decay, int32_t maximize) {               \
    return guard([&] {                                                                                            \
      adafactor<T>(count, ndims, shapes, params, grads, row_vars, col_vars, variances,                            \
                   AdafactorHyper{lr, beta2_decay, eps1, eps2, d, weight_decay, maximize != 0, step});            \
    });                                                                                                           \
  }

FASTOPT_DEFINE_ADAFACTOR(float, f32)
FASTOPT_DEFINE_ADAFACTOR(double, f64)

}  // extern "C"
