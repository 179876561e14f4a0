// XLA FFI handlers of the losses (fastopt.jax): the fused softmax cross-entropy, which writes the
// loss and its gradient in one kernel call, and softmax / log_softmax. On the CPU they call the
// kernel table, on CUDA the CUDA backend on XLA's stream: the same kernels as fastopt's own calls.
//
// Leading batch dimensions (what jax.vmap adds, with vmap_method="broadcast_all"): logits
// (B..., N, C), labels (B..., N), weight (B..., C); each batch element is one kernel call, with its
// own reduction. softmax works over the last axis of any shape.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <string_view>

#include "common/hyper_rules.h"
#include "cpu/kernel_table.h"
#include "cuda/backend.h"
#include "jax/handlers.h"
#include "jax/host_test.h"
#include "jax/kernel_threads.h"
#include "jax/update_operands.h"
#include "jax/xla_threads.h"

namespace fastopt::jax_ffi {

namespace {

using Dims = ffi::AnyBuffer::Dimensions;

std::string shape_of(Dims dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + (dims.size() == 1 ? ",)" : ")");
}

bool same_prefix(Dims a, Dims b, size_t count) {
  if (a.size() < count || b.size() < count) return false;
  for (size_t i = 0; i < count; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

// The checked shape of one cross-entropy call.
struct CrossEntropyShape {
  int64_t batch = 1, n = 0, c = 0;
  DType dtype = DType::Float32, labels = DType::Int64;
  Reduction reduction = Reduction::Mean;
};

ffi::Error read_cross_entropy(const ffi::AnyBuffer& logits, const ffi::AnyBuffer& labels,
                              const std::optional<ffi::AnyBuffer>& weight, const ffi::AnyBuffer& value,
                              const ffi::AnyBuffer& dlogits, std::string_view reduction, double label_smoothing,
                              double z_loss, CrossEntropyShape& s) {
  const Dims dims = logits.dimensions();
  const std::optional<DType> dtype = dtype_of(logits.element_type());
  if (!dtype || (*dtype != DType::Float32 && *dtype != DType::Float64)) {
    return invalid("logits must be float32 or float64, got " + type_name(logits.element_type()));
  }
  if (dims.size() < 2) return invalid("logits must be (N, C), got shape " + shape_of(dims));
  const size_t rank = dims.size();
  s.dtype = *dtype;
  s.n = dims[rank - 2];
  s.c = dims[rank - 1];
  for (size_t i = 0; i + 2 < rank; ++i) s.batch *= dims[i];
  if (s.c == 0) return invalid("logits has C = 0 classes");
  const std::optional<DType> label_type = dtype_of(labels.element_type());
  if (!label_type || (*label_type != DType::Int32 && *label_type != DType::Int64)) {
    return invalid("labels must be int32 or int64, got " + type_name(labels.element_type()));
  }
  s.labels = *label_type;
  if (labels.dimensions().size() != rank - 1 || !same_prefix(labels.dimensions(), dims, rank - 1)) {
    return invalid("labels has shape " + shape_of(labels.dimensions()) + " but logits has " + shape_of(dims));
  }
  if (weight) {
    const Dims w = weight->dimensions();
    if (weight->element_type() != logits.element_type()) {
      return invalid("weight has dtype " + type_name(weight->element_type()) + " but logits has " + dtype_name(s.dtype));
    }
    if (w.size() != rank - 1 || !same_prefix(w, dims, rank - 2) || w[rank - 2] != s.c) {
      return invalid("weight has shape " + shape_of(w) + " but logits has " + std::to_string(s.c) + " classes");
    }
  }
  if (reduction == "mean") {
    s.reduction = Reduction::Mean;
  } else if (reduction == "sum") {
    s.reduction = Reduction::Sum;
  } else if (reduction == "none") {
    s.reduction = Reduction::None;
  } else {
    return invalid("reduction must be 'mean', 'sum' or 'none', got '" + std::string(reduction) + "'");
  }
  if (const rules::Check bad = rules::check_cross_entropy(label_smoothing, z_loss)) {
    return invalid(rules::describe(*bad, show));
  }
  const int64_t values = s.reduction == Reduction::None ? s.batch * s.n : s.batch;
  if (value.element_type() != logits.element_type() || int64_t(value.element_count()) != values ||
      dlogits.element_type() != logits.element_type() || dlogits.element_count() != logits.element_count()) {
    return ffi::Error::Internal("fastopt_cross_entropy: the results do not match the operands");
  }
  return ffi::Error::Success();
}

// The first label outside [0, c) that is not ignore_index, across the batch: a message, or nothing.
template <typename L>
std::optional<std::string> bad_label(const L* labels, const CrossEntropyShape& s, int64_t ignore_index) {
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t i = 0; i < s.n; ++i) {
      const int64_t v = int64_t(labels[b * s.n + i]);
      if (v == ignore_index || (v >= 0 && v < s.c)) continue;
      const std::string at = s.batch > 1 ? std::to_string(b) + ", " + std::to_string(i) : std::to_string(i);
      return "labels[" + at + "] = " + std::to_string(v) + " is out of range for " + std::to_string(s.c) +
             " classes (and is not ignore_index=" + std::to_string(ignore_index) + ")";
    }
  }
  return std::nullopt;
}

std::optional<ffi::AnyBuffer> optional_weight(const ffi::RemainingArgs& rest) {
  return rest.size() == 0 ? std::nullopt : arg_at(rest, 0);
}

// ---------------------------------------------------------------- cross-entropy

ffi::Error cross_entropy_cpu(ffi::AnyBuffer logits, ffi::AnyBuffer labels, ffi::RemainingArgs rest,
                             ffi::Result<ffi::AnyBuffer> value, ffi::Result<ffi::AnyBuffer> dlogits,
                             int64_t ignore_index, double label_smoothing, double z_loss, std::string_view reduction) {
  return guarded("fastopt_cross_entropy", [&]() -> ffi::Error {
    const std::optional<ffi::AnyBuffer> weight = optional_weight(rest);
    CrossEntropyShape s;
    if (ffi::Error e = read_cross_entropy(logits, labels, weight, *value, *dlogits, reduction, label_smoothing,
                                          z_loss, s);
        !e.success()) {
      return e;
    }
    // Every label is checked before anything is written, as fastopt's own calls do. Under jit a bad
    // label can only be seen here, when the step runs: JAX raises this error where the result is read.
    const std::optional<std::string> bad =
        s.labels == DType::Int32 ? bad_label(static_cast<const int32_t*>(labels.untyped_data()), s, ignore_index)
                                 : bad_label(static_cast<const int64_t*>(labels.untyped_data()), s, ignore_index);
    if (bad) return invalid(*bad);
    const KernelOnCallingThread one_thread;
    auto run = [&](auto t, auto l) {
      using T = decltype(t);
      using L = decltype(l);
      const T* z = static_cast<const T*>(logits.untyped_data());
      const L* y = static_cast<const L*>(labels.untyped_data());
      const T* w = weight ? static_cast<const T*>(weight->untyped_data()) : nullptr;
      T* dz = static_cast<T*>(dlogits->untyped_data());  // may be the logits' own buffer (aliased)
      T* out = static_cast<T*>(value->untyped_data());
      const cpu::TypedKernels<T>& k = cpu::kernels().of<T>();
      for (int64_t b = 0; b < s.batch; ++b) {
        const int64_t rows = b * s.n;
        cpu::CrossEntropyArgs<T, L> args{z + rows * s.c, y + rows, w ? w + b * s.c : nullptr, dz + rows * s.c,
                                         s.reduction == Reduction::None ? out + rows : nullptr, s.n, s.c,
                                         ignore_index, label_smoothing, z_loss, s.reduction};
        const double loss = k.cross_entropy(args);
        if (s.reduction != Reduction::None) out[b] = T(loss);
      }
    };
    auto with_labels = [&](auto t) {
      if (s.labels == DType::Int32) {
        run(t, int32_t{});
      } else {
        run(t, int64_t{});
      }
    };
    if (s.dtype == DType::Float32) {
      with_labels(float{});
    } else {
      with_labels(double{});
    }
    return ffi::Error::Success();
  });
}

// The CUDA backend's calls (host_test.h has the stand-in that records them instead).
struct CudaCalls {
  static cuda::BadLabel find_bad_label(const void* labels, DType type, int64_t n, int64_t c, bool has_ignore,
                                       int64_t ignore_index, const cuda::Queue& queue) {
    return cuda::find_bad_label(labels, type, n, c, has_ignore, ignore_index, queue);
  }
  static void cross_entropy(const cuda::CrossEntropyCall& call, const cuda::Queue& queue) {
    cuda::cross_entropy(call, queue);
  }
  static void softmax(const void* x, void* out, DType dtype, int64_t rows, int64_t c, bool log,
                      const cuda::Queue& queue) {
    cuda::softmax(x, out, dtype, rows, c, log, queue);
  }
};

template <typename Calls>
ffi::Error cross_entropy_cuda(void* stream, int32_t device, ffi::AnyBuffer logits, ffi::AnyBuffer labels,
                              ffi::RemainingArgs rest, ffi::Result<ffi::AnyBuffer> value,
                              ffi::Result<ffi::AnyBuffer> dlogits, int64_t ignore_index, double label_smoothing,
                              double z_loss, std::string_view reduction) {
  return guarded("fastopt_cross_entropy", [&]() -> ffi::Error {
    const std::optional<ffi::AnyBuffer> weight = optional_weight(rest);
    CrossEntropyShape s;
    if (ffi::Error e = read_cross_entropy(logits, labels, weight, *value, *dlogits, reduction, label_smoothing,
                                          z_loss, s);
        !e.success()) {
      return e;
    }
    const cuda::Queue queue{device, stream};
    const size_t item = size_t(dtype_size(s.dtype)), label_item = size_t(dtype_size(s.labels));
    char* z = static_cast<char*>(logits.untyped_data());
    char* y = static_cast<char*>(labels.untyped_data());
    char* w = weight ? static_cast<char*>(weight->untyped_data()) : nullptr;
    char* dz = static_cast<char*>(dlogits->untyped_data());
    char* out = static_cast<char*>(value->untyped_data());
    // The labels are checked on the device and the answer read back, which waits for XLA's stream
    // (as fastopt's own CUDA calls do): a bad label must not reach a kernel that indexes with it.
    for (int64_t b = 0; b < s.batch; ++b) {
      const cuda::BadLabel found = Calls::find_bad_label(y + size_t(b * s.n) * label_item, s.labels, s.n, s.c, true,
                                                         ignore_index, queue);
      if (found.index >= 0) {
        const std::string at = s.batch > 1 ? std::to_string(b) + ", " + std::to_string(found.index)
                                           : std::to_string(found.index);
        return invalid("labels[" + at + "] = " + std::to_string(found.value) + " is out of range for " +
                       std::to_string(s.c) + " classes (and is not ignore_index=" + std::to_string(ignore_index) + ")");
      }
    }
    for (int64_t b = 0; b < s.batch; ++b) {
      const size_t rows = size_t(b * s.n);
      const bool none = s.reduction == Reduction::None;
      const cuda::CrossEntropyCall call{z + rows * size_t(s.c) * item, s.dtype, y + rows * label_item, s.labels,
                                        w ? w + size_t(b * s.c) * item : nullptr, dz + rows * size_t(s.c) * item,
                                        none ? out + rows * item : nullptr, none ? nullptr : out + size_t(b) * item,
                                        s.n, s.c, ignore_index, label_smoothing, z_loss, s.reduction};
      Calls::cross_entropy(call, queue);
    }
    return ffi::Error::Success();
  });
}

// ---------------------------------------------------------------- softmax / log_softmax

ffi::Error read_softmax(const ffi::AnyBuffer& x, const ffi::AnyBuffer& out, DType& dtype, int64_t& rows, int64_t& c) {
  const std::optional<DType> t = dtype_of(x.element_type());
  if (!t || (*t != DType::Float32 && *t != DType::Float64)) {
    return invalid("x must be float32 or float64, got " + type_name(x.element_type()));
  }
  if (x.dimensions().size() < 1) return invalid("x must have at least one axis, got a 0-d array");
  if (out.element_type() != x.element_type() || out.element_count() != x.element_count()) {
    return ffi::Error::Internal("fastopt_softmax: the result does not match x");
  }
  dtype = *t;
  c = x.dimensions().back();
  rows = c == 0 ? 0 : int64_t(x.element_count()) / c;
  return ffi::Error::Success();
}

// Rows are independent: large inputs are cut into row ranges, one kernel call each, on XLA's thread
// pool (xla_threads.h); the same bits as one call.
ffi::Error softmax_cpu(ffi::ThreadPool pool, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out, bool log) {
  return guarded("fastopt_softmax", [&]() -> ffi::Error {
    DType dtype;
    int64_t rows = 0, c = 0;
    if (ffi::Error e = read_softmax(x, *out, dtype, rows, c); !e.success()) return e;
    const int pieces = piece_count(rows * c, std::min<int64_t>(pool.num_threads(), rows));
    auto run = [&](auto zero) {
      using T = decltype(zero);
      const cpu::TypedKernels<T>& k = cpu::kernels().of<T>();
      const T* in = static_cast<const T*>(x.untyped_data());
      T* to = static_cast<T*>(out->untyped_data());
      if (pieces == 1) {
        const KernelOnCallingThread one_thread;
        k.softmax(in, to, rows, c, log);
        return;
      }
      const std::vector<int64_t> at = cuts(rows, pieces, 1);
      std::vector<std::pair<int64_t, int64_t>> ranges;
      for (size_t i = 0; i + 1 < at.size(); ++i) ranges.emplace_back(at[i], at[i + 1]);
      run_pieces(pool, ranges, [&k, in, to, c, log](const std::pair<int64_t, int64_t>& r) {
        k.softmax(in + r.first * c, to + r.first * c, r.second - r.first, c, log);
      });
    };
    if (dtype == DType::Float32) {
      run(float{});
    } else {
      run(double{});
    }
    return ffi::Error::Success();
  });
}

template <typename Calls>
ffi::Error softmax_cuda(void* stream, int32_t device, ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out, bool log) {
  return guarded("fastopt_softmax", [&]() -> ffi::Error {
    DType dtype;
    int64_t rows = 0, c = 0;
    if (ffi::Error e = read_softmax(x, *out, dtype, rows, c); !e.success()) return e;
    Calls::softmax(x.untyped_data(), out->untyped_data(), dtype, rows, c, log, cuda::Queue{device, stream});
    return ffi::Error::Success();
  });
}

template <typename B>
auto cross_entropy_binding(B b) {
  return std::move(b)
      .template Arg<ffi::AnyBuffer>()
      .template Arg<ffi::AnyBuffer>()
      .RemainingArgs()
      .template Ret<ffi::AnyBuffer>()
      .template Ret<ffi::AnyBuffer>()
      .template Attr<int64_t>("ignore_index")
      .template Attr<double>("label_smoothing")
      .template Attr<double>("z_loss")
      .template Attr<std::string_view>("reduction");
}

template <typename B>
auto softmax_binding(B b) {
  return std::move(b).template Arg<ffi::AnyBuffer>().template Ret<ffi::AnyBuffer>().template Attr<bool>("log");
}

auto cuda_context() { return ffi::Ffi::Bind().Ctx<ffi::PlatformStream<void*>>().Ctx<ffi::DeviceOrdinal>(); }

XLA_FFI_DEFINE_HANDLER(kCrossEntropyCpu, cross_entropy_cpu, cross_entropy_binding(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER(kCrossEntropyCuda, cross_entropy_cuda<CudaCalls>, cross_entropy_binding(cuda_context()));
XLA_FFI_DEFINE_HANDLER(kSoftmaxCpu, softmax_cpu, softmax_binding(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()));
XLA_FFI_DEFINE_HANDLER(kSoftmaxCuda, softmax_cuda<CudaCalls>, softmax_binding(cuda_context()));

// The CUDA handlers' code on the host, for tests (host_test.h): without XLA's GPU context, a null
// stream and device 0, recording what they would launch.
ffi::Error cross_entropy_host(ffi::AnyBuffer logits, ffi::AnyBuffer labels, ffi::RemainingArgs rest,
                              ffi::Result<ffi::AnyBuffer> value, ffi::Result<ffi::AnyBuffer> dlogits,
                              int64_t ignore_index, double label_smoothing, double z_loss, std::string_view reduction) {
  return cross_entropy_cuda<HostRecorder>(nullptr, 0, logits, labels, rest, value, dlogits, ignore_index,
                                          label_smoothing, z_loss, reduction);
}
ffi::Error softmax_host(ffi::AnyBuffer x, ffi::Result<ffi::AnyBuffer> out, bool log) {
  return softmax_cuda<HostRecorder>(nullptr, 0, x, out, log);
}
XLA_FFI_DEFINE_HANDLER(kCrossEntropyHost, cross_entropy_host, cross_entropy_binding(ffi::Ffi::Bind()));
XLA_FFI_DEFINE_HANDLER(kSoftmaxHost, softmax_host, softmax_binding(ffi::Ffi::Bind()));

}  // namespace

std::vector<Target> loss_targets() {
  return {{"fastopt_cross_entropy", kCrossEntropyCpu, kCrossEntropyCuda},
          {"fastopt_softmax", kSoftmaxCpu, kSoftmaxCuda}};
}

std::vector<Target> loss_host_test_targets() {
  return {{"fastopt_cross_entropy", kCrossEntropyHost, nullptr}, {"fastopt_softmax", kSoftmaxHost, nullptr}};
}

}  // namespace fastopt::jax_ffi
