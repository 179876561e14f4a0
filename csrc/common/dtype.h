// Element types an array argument can have, shared by the bindings and both backends. The CPU
// kernels take float32/float64 (and int32/int64 labels); the CUDA kernels also take float16 and
// bfloat16 parameters and gradients, with float32 optimizer state.
#pragma once

#include <cstdint>

namespace fastopt {

// UInt8: the codes of 8-bit blockwise optimizer state (fastopt.QuantizedState), never an update's
// params or grads.
enum class DType : uint8_t { Float16, BFloat16, Float32, Float64, Int32, Int64, UInt8 };

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float16: return "float16";
    case DType::BFloat16: return "bfloat16";
    case DType::Float32: return "float32";
    case DType::Float64: return "float64";
    case DType::Int32: return "int32";
    case DType::Int64: return "int64";
    case DType::UInt8: return "uint8";
  }
  return "?";
}

constexpr int dtype_size(DType t) {
  switch (t) {
    case DType::UInt8: return 1;
    case DType::Float16:
    case DType::BFloat16: return 2;
    case DType::Float32:
    case DType::Int32: return 4;
    case DType::Float64:
    case DType::Int64: return 8;
  }
  return 0;
}

constexpr bool is_half(DType t) { return t == DType::Float16 || t == DType::BFloat16; }
constexpr bool is_float(DType t) { return t != DType::Int32 && t != DType::Int64 && t != DType::UInt8; }

}  // namespace fastopt
