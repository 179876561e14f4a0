// The C ABI (fastopt/c_api.h) over the CPU kernel table: check every pointer, size and
// hyperparameter, build the kernels' TensorList, run. No formula lives here; the rules of the
// hyperparameters are common/hyper_rules.h, shared with the Python binding.
//
// Errors travel inside as a CError exception and are turned into a status code and a thread-local
// message at the boundary (guard, capi_common.h); nothing is thrown across the C ABI. The
// optimizers described as rules (fastopt/registry.h) have their generic entries in c_api_rules.cpp.
#include "fastopt/c_api.h"

#include <cmath>
#include <string>
#include <vector>

#include "capi/capi_common.h"

#ifndef FASTOPT_VERSION
#define FASTOPT_VERSION "unknown"
#endif

namespace fastopt::capi {

namespace {

// The optimizers: list form; the single form calls it with a list of one.
template <typename T>
int32_t sgd(int64_t count, const int64_t* sizes, T* const* params, const T* const* grads, T* const* bufs,
            const SgdHyper& h, bool single) {
  return guard([&] {
    require(rules::check(h));
    require(rules::check_range(h, range_of<T>()));
    const auto list = take_list<T, 3>(count, sizes,
                                      {{{single ? "param" : "params", params, true},
                                        {single ? "grad" : "grads", mut(grads), true},
                                        {single ? "momentum_buffer" : "momentum_buffers", bufs, h.momentum != 0.0}}},
                                      single);
    cpu::kernels().of<T>().sgd(list, h);
  });
}

template <typename T>
int32_t adagrad(int64_t count, const int64_t* sizes, T* const* params, const T* const* grads, T* const* sums,
                const AdagradHyper& h, bool single) {
  return guard([&] {
    require(rules::check(h));
    require(rules::check_range(h, range_of<T>()));
    const auto list = take_list<T, 3>(count, sizes,
                                      {{{single ? "param" : "params", params, true},
                                        {single ? "grad" : "grads", mut(grads), true},
                                        {single ? "state_sum" : "state_sums", sums, true}}},
                                      single);
    cpu::kernels().of<T>().adagrad(list, h);
  });
}

template <typename T>
int32_t rmsprop(int64_t count, const int64_t* sizes, T* const* params, const T* const* grads, T* const* sqs,
                T* const* bufs, T* const* gas, const RmspropHyper& h, bool single) {
  return guard([&] {
    require(rules::check(h));
    require(rules::check_range(h, range_of<T>()));
    const auto list = take_list<T, 5>(count, sizes,
                                      {{{single ? "param" : "params", params, true},
                                        {single ? "grad" : "grads", mut(grads), true},
                                        {single ? "square_avg" : "square_avgs", sqs, true},
                                        {single ? "momentum_buffer" : "momentum_buffers", bufs, h.momentum > 0.0},
                                        {single ? "grad_avg" : "grad_avgs", gas, h.centered}}},
                                      single);
    cpu::kernels().of<T>().rmsprop(list, h);
  });
}

template <typename T>
int32_t adam(int64_t count, const int64_t* sizes, T* const* params, const T* const* grads, T* const* ms,
             T* const* vs, T* const* vmaxs, const AdamHyper& h, bool single) {
  return guard([&] {
    require(rules::check(h));
    require(rules::check_range(h, range_of<T>()));
    const auto list = take_list<T, 5>(count, sizes,
                                      {{{single ? "param" : "params", params, true},
                                        {single ? "grad" : "grads", mut(grads), true},
                                        {single ? "exp_avg" : "exp_avgs", ms, true},
                                        {single ? "exp_avg_sq" : "exp_avg_sqs", vs, true},
                                        {single ? "max_exp_avg_sq" : "max_exp_avg_sqs", vmaxs, h.amsgrad}}},
                                      single);
    cpu::kernels().of<T>().adam(list, h);
  });
}

template <typename T>
int32_t cross_entropy(const T* logits, const int64_t* labels, const T* weight, int64_t n, int64_t c,
                      int64_t ignore_index, double label_smoothing, int32_t reduction, double z_loss,
                      T* dlogits, T* row_losses, double* loss) {
  return guard([&] {
    require(rules::check_cross_entropy(label_smoothing, z_loss));
    require(rules::check_cross_entropy_range(z_loss, range_of<T>()));
    cpu::Reduction red;
    switch (reduction) {
      case FASTOPT_REDUCTION_MEAN: red = cpu::Reduction::Mean; break;
      case FASTOPT_REDUCTION_SUM: red = cpu::Reduction::Sum; break;
      case FASTOPT_REDUCTION_NONE: red = cpu::Reduction::None; break;
      default:
        throw CError{FASTOPT_ERROR_HYPERPARAMETER,
                     "reduction must be FASTOPT_REDUCTION_MEAN, _SUM or _NONE (0, 1, 2), got " +
                         std::to_string(reduction)};
    }
    if (n < 0) throw CError{FASTOPT_ERROR_SIZE, "n must be >= 0, got " + std::to_string(n)};
    if (c < 1) throw CError{FASTOPT_ERROR_SIZE, "c must be >= 1 (classes), got " + std::to_string(c)};
    const bool rows = n > 0;
    auto need = [](const void* p, bool needed, const char* name) {
      if (needed && p == nullptr) throw CError{FASTOPT_ERROR_NULL_POINTER, std::string(name) + " is NULL"};
    };
    need(logits, rows, "logits");
    need(labels, rows, "labels");
    need(dlogits, rows, "dlogits");
    need(row_losses, rows && red == cpu::Reduction::None, "row_losses (required for FASTOPT_REDUCTION_NONE)");
    need(loss, red != cpu::Reduction::None, "loss");
    for (int64_t i = 0; i < n; ++i) {
      const int64_t y = labels[i];
      if (y != ignore_index && (y < 0 || y >= c)) {
        throw CError{FASTOPT_ERROR_LABEL, "labels[" + std::to_string(i) + "] = " + std::to_string(y) +
                                              " is out of range for " + std::to_string(c) +
                                              " classes (and is not ignore_index=" +
                                              std::to_string(ignore_index) + ")"};
      }
    }
    T* losses = red == cpu::Reduction::None ? row_losses : nullptr;
    if (rows) {
      // dlogits may be logits itself, nothing else may share memory with an output.
      auto span = [](const void* p, int64_t bytes, const char* name) {
        const auto b = reinterpret_cast<uintptr_t>(p);
        return Span{b, b + uintptr_t(bytes), name};
      };
      const int64_t cells = n * c;
      std::vector<Span> spans = {span(dlogits, cells * int64_t(sizeof(T)), "dlogits"),
                                 span(labels, n * int64_t(sizeof(int64_t)), "labels")};
      if (dlogits != logits) spans.push_back(span(logits, cells * int64_t(sizeof(T)), "logits"));
      if (weight) spans.push_back(span(weight, c * int64_t(sizeof(T)), "weight"));
      if (losses) spans.push_back(span(losses, n * int64_t(sizeof(T)), "row_losses"));
      check_disjoint(std::move(spans));
    }
    const cpu::CrossEntropyArgs<T, int64_t> args{logits, labels, weight, dlogits, losses, n, c,
                                                 ignore_index, label_smoothing, z_loss, red};
    const double value = cpu::kernels().of<T>().cross_entropy(args);
    if (loss) *loss = red == cpu::Reduction::None ? 0.0 : value;
  });
}

}  // namespace

}  // namespace fastopt::capi

using namespace fastopt;
using namespace fastopt::capi;

extern "C" {

const char* fastopt_last_error(void) { return last_error.c_str(); }

const char* fastopt_status_name(int32_t status) {
  switch (status) {
    case FASTOPT_OK: return "FASTOPT_OK";
    case FASTOPT_ERROR_NULL_POINTER: return "FASTOPT_ERROR_NULL_POINTER";
    case FASTOPT_ERROR_SIZE: return "FASTOPT_ERROR_SIZE";
    case FASTOPT_ERROR_HYPERPARAMETER: return "FASTOPT_ERROR_HYPERPARAMETER";
    case FASTOPT_ERROR_OVERLAP: return "FASTOPT_ERROR_OVERLAP";
    case FASTOPT_ERROR_LABEL: return "FASTOPT_ERROR_LABEL";
    case FASTOPT_ERROR_INTERNAL: return "FASTOPT_ERROR_INTERNAL";
    case FASTOPT_ERROR_UNKNOWN_OPTIMIZER: return "FASTOPT_ERROR_UNKNOWN_OPTIMIZER";
    default: return "unknown status";
  }
}

const char* fastopt_version(void) { return FASTOPT_VERSION; }

const char* fastopt_cpu_isa(void) { return cpu::kernels().isa; }

// Each optimizer, in both types and both forms. The single form passes &n as a list of one.
#define FASTOPT_DEFINE_FOR(T, SUFFIX)                                                                    \
  int32_t fastopt_sgd_##SUFFIX(int64_t n, T* param, const T* grad, T* momentum_buffer, double lr,        \
                               double momentum, double dampening, double weight_decay, int32_t nesterov, \
                               int32_t maximize, int64_t step) {                                         \
    return sgd<T>(1, &n, &param, &grad, &momentum_buffer,                                                \
                  SgdHyper{lr, momentum, dampening, weight_decay, nesterov != 0, maximize != 0, step}, true); \
  }                                                                                                      \
  int32_t fastopt_sgd_list_##SUFFIX(int64_t count, const int64_t* sizes, T* const* params,               \
                                    const T* const* grads, T* const* momentum_buffers, double lr,         \
                                    double momentum, double dampening, double weight_decay,              \
                                    int32_t nesterov, int32_t maximize, int64_t step) {                  \
    return sgd<T>(count, sizes, params, grads, momentum_buffers,                                         \
                  SgdHyper{lr, momentum, dampening, weight_decay, nesterov != 0, maximize != 0, step}, false); \
  }                                                                                                      \
  int32_t fastopt_adagrad_##SUFFIX(int64_t n, T* param, const T* grad, T* state_sum, double lr,          \
                                   double lr_decay, double weight_decay, double eps, int32_t maximize,   \
                                   int64_t step) {                                                       \
    return adagrad<T>(1, &n, &param, &grad, &state_sum,                                                  \
                      AdagradHyper{lr, lr_decay, weight_decay, eps, maximize != 0, step}, true);         \
  }                                                                                                      \
  int32_t fastopt_adagrad_list_##SUFFIX(int64_t count, const int64_t* sizes, T* const* params,           \
                                        const T* const* grads, T* const* state_sums, double lr,          \
                                        double lr_decay, double weight_decay, double eps,                \
                                        int32_t maximize, int64_t step) {                                \
    return adagrad<T>(count, sizes, params, grads, state_sums,                                           \
                      AdagradHyper{lr, lr_decay, weight_decay, eps, maximize != 0, step}, false);        \
  }                                                                                                      \
  int32_t fastopt_rmsprop_##SUFFIX(int64_t n, T* param, const T* grad, T* square_avg, T* momentum_buffer, \
                                   T* grad_avg, double lr, double alpha, double eps, double weight_decay, \
                                   double momentum, int32_t centered, int32_t maximize) {                \
    return rmsprop<T>(1, &n, &param, &grad, &square_avg, &momentum_buffer, &grad_avg,                   \
                      RmspropHyper{lr, alpha, eps, weight_decay, momentum, centered != 0, maximize != 0}, \
                      true);                                                                             \
  }                                                                                                      \
  int32_t fastopt_rmsprop_list_##SUFFIX(int64_t count, const int64_t* sizes, T* const* params,           \
                                        const T* const* grads, T* const* square_avgs,                    \
                                        T* const* momentum_buffers, T* const* grad_avgs, double lr,      \
                                        double alpha, double eps, double weight_decay, double momentum,  \
                                        int32_t centered, int32_t maximize) {                            \
    return rmsprop<T>(count, sizes, params, grads, square_avgs, momentum_buffers, grad_avgs,             \
                      RmspropHyper{lr, alpha, eps, weight_decay, momentum, centered != 0, maximize != 0}, \
                      false);                                                                            \
  }                                                                                                      \
  FASTOPT_DEFINE_ADAM(T, SUFFIX, adam, false)                                                            \
  FASTOPT_DEFINE_ADAM(T, SUFFIX, adamw, true)                                                            \
  int32_t fastopt_softmax_cross_entropy_##SUFFIX(const T* logits, const int64_t* labels, const T* weight, \
                                                 int64_t n, int64_t c, int64_t ignore_index,              \
                                                 double label_smoothing, int32_t reduction,              \
                                                 double z_loss, T* dlogits, T* row_losses, double* loss) { \
    return cross_entropy<T>(logits, labels, weight, n, c, ignore_index, label_smoothing, reduction,     \
                            z_loss, dlogits, row_losses, loss);                                          \
  }

// Adam and AdamW differ in the decoupled flag only.
#define FASTOPT_DEFINE_ADAM(T, SUFFIX, NAME, DECOUPLED)                                                   \
  int32_t fastopt_##NAME##_##SUFFIX(int64_t n, T* param, const T* grad, T* exp_avg, T* exp_avg_sq,        \
                                    T* max_exp_avg_sq, double lr, double beta1, double beta2, double eps, \
                                    double weight_decay, int32_t amsgrad, int32_t maximize, int64_t step) { \
    return adam<T>(1, &n, &param, &grad, &exp_avg, &exp_avg_sq, &max_exp_avg_sq,                         \
                   AdamHyper{lr, beta1, beta2, eps, weight_decay, amsgrad != 0, DECOUPLED, maximize != 0, \
                             step},                                                                      \
                   true);                                                                                \
  }                                                                                                      \
  int32_t fastopt_##NAME##_list_##SUFFIX(int64_t count, const int64_t* sizes, T* const* params,          \
                                         const T* const* grads, T* const* exp_avgs,                      \
                                         T* const* exp_avg_sqs, T* const* max_exp_avg_sqs, double lr,    \
                                         double beta1, double beta2, double eps, double weight_decay,    \
                                         int32_t amsgrad, int32_t maximize, int64_t step) {              \
    return adam<T>(count, sizes, params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs,                  \
                   AdamHyper{lr, beta1, beta2, eps, weight_decay, amsgrad != 0, DECOUPLED, maximize != 0, \
                             step},                                                                      \
                   false);                                                                               \
  }

FASTOPT_DEFINE_FOR(float, f32)
FASTOPT_DEFINE_FOR(double, f64)

}  // extern "C"
