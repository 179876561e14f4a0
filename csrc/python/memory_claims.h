// What a producer claims about an array's memory (a DLPack export, a __cuda_array_interface__ dict, a
// tensor's shape and pointer), checked before anything reads or writes through it: the number of axes,
// every extent, the element count and byte size (within int64 and the address space), and a data pointer
// that is not NULL unless the array is empty. A claim that passes can still lie about memory it does not
// own (nothing can tell), but no arithmetic on it overflows and no NULL or wrapped range is written.
// `source` names the claim in messages ("its DLPack export").
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <limits>
#include <string>

namespace fastopt::bindings {

// NumPy's limit (NPY_MAXDIMS); DLPack and the CUDA array interface set none.
constexpr int64_t kMaxDims = 64;

// ndim in [0, kMaxDims], with a shape array when ndim > 0.
inline int check_ndim(int64_t ndim, bool have_shape, const std::string& where, const char* source) {
  if (ndim < 0 || ndim > kMaxDims) {
    throw pybind11::value_error(where + " has ndim " + std::to_string(ndim) + " in " + std::string(source) +
                                "; an array has 0 to " + std::to_string(kMaxDims) + " axes");
  }
  if (ndim > 0 && !have_shape) {
    throw pybind11::value_error(where + " has ndim " + std::to_string(ndim) + " but no shape in " + source);
  }
  return int(ndim);
}

// The product of ndim extents, each >= 0, without overflowing int64.
inline int64_t count_elements(const int64_t* shape, int ndim, const std::string& where, const char* source) {
  int64_t count = 1;
  bool overflow = false;
  for (int d = 0; d < ndim; ++d) {
    if (shape[d] < 0) {
      throw pybind11::value_error(where + " has a negative extent (" + std::to_string(shape[d]) + " on axis " +
                                  std::to_string(d) + ") in " + source);
    }
    overflow = overflow || __builtin_mul_overflow(count, shape[d], &count);
  }
  // (An extent of 0 makes the array empty whatever the others say; only then may their product overflow.)
  if (overflow) {
    for (int d = 0; d < ndim; ++d) {
      if (shape[d] == 0) return 0;
    }
    throw pybind11::value_error(where + " has extents whose product overflows 64 bits in " + source);
  }
  return count;
}

// [data, data + elements * item_bytes) is a range of the address space, and data is not NULL unless the
// array is empty.
inline void check_data_range(uintptr_t data, int64_t elements, int64_t item_bytes, const std::string& where,
                             const char* source) {
  if (elements == 0) return;
  int64_t bytes = 0;
  if (__builtin_mul_overflow(elements, item_bytes, &bytes)) {
    throw pybind11::value_error(where + " claims " + std::to_string(elements) +
                                " elements in " + source + ", more bytes than 64 bits count");
  }
  if (data == 0) {
    throw pybind11::value_error(where + " has a NULL data pointer for " + std::to_string(elements) +
                                " elements in " + source);
  }
  uintptr_t end = 0;
  if (__builtin_add_overflow(data, uintptr_t(bytes), &end)) {
    throw pybind11::value_error(where + "'s memory (" + std::to_string(bytes) + " bytes from its data pointer) "
                                "runs past the end of the address space in " + source);
  }
}

}  // namespace fastopt::bindings
