// What the XLA FFI handlers of fastopt.jax share: the typed FFI header (jaxlib's xla/ffi/api/ffi.h,
// header-only: these files link nothing of XLA), dtype mapping, and error plumbing. The handlers are
// adapters: they read XLA's buffers, check them, and call the same kernels as the rest of fastopt
// (the CPU kernel table, or the CUDA backend of csrc/cuda/backend.h); they hold no math.
//
// No exception may cross into XLA: every handler body runs inside guarded(), which turns one into an
// ffi::Error. JAX raises it as a JaxRuntimeError, or (an INVALID_ARGUMENT error on its fast dispatch
// path, a jitted function called again) as a ValueError.
#pragma once

#include <charconv>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <utility>

#include "common/dtype.h"
#include "xla/ffi/api/ffi.h"

namespace fastopt::jax_ffi {

namespace ffi = xla::ffi;

// fastopt's name for an XLA element type, or nothing for one fastopt has no kernels for.
inline std::optional<DType> dtype_of(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F16: return DType::Float16;
    case ffi::DataType::BF16: return DType::BFloat16;
    case ffi::DataType::F32: return DType::Float32;
    case ffi::DataType::F64: return DType::Float64;
    case ffi::DataType::S32: return DType::Int32;
    case ffi::DataType::S64: return DType::Int64;
    default: return std::nullopt;
  }
}

inline std::string type_name(ffi::DataType t) {
  const std::optional<DType> d = dtype_of(t);
  return d ? dtype_name(*d) : "XLA element type " + std::to_string(int(t));
}

// A float as Python's repr shows it (the shortest string that reads back the same), for messages.
inline std::string show(double value) {
  char text[32];
  const auto end = std::to_chars(text, text + sizeof(text), value).ptr;
  return std::string(text, end);
}

inline ffi::Error invalid(std::string message) { return ffi::Error::InvalidArgument(std::move(message)); }

// body() -> ffi::Error, with any exception (a CUDA error, bad_alloc) turned into an error naming `what`.
template <typename Body>
ffi::Error guarded(const char* what, Body&& body) noexcept {
  try {
    return body();
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string(what) + ": " + e.what());
  } catch (...) {
    return ffi::Error::Internal(std::string(what) + ": unknown error");
  }
}

// One element of a 0-d (or one-element) buffer in host memory, as a double or an int64.
inline double host_real(const ffi::AnyBuffer& b) {
  return b.element_type() == ffi::DataType::F32 ? double(*static_cast<const float*>(b.untyped_data()))
                                                 : *static_cast<const double*>(b.untyped_data());
}

inline int64_t host_integer(const ffi::AnyBuffer& b) {
  return b.element_type() == ffi::DataType::S32 ? int64_t(*static_cast<const int32_t*>(b.untyped_data()))
                                                 : *static_cast<const int64_t*>(b.untyped_data());
}

}  // namespace fastopt::jax_ffi
