// The readers behind take_array (array_intake.cpp) for arrays that are not NumPy's: DLPack producers,
// torch tensors (read through their own methods) and __cuda_array_interface__ objects. Each turns what
// the producer says into an ArrayRef after checking it (protocol_values.h, memory_claims.h): a claim that
// cannot describe real memory (NULL data, negative extents, absurd ndim, overflowing sizes) is refused
// here, naming the argument, before anything reads or writes through it.
#pragma once

#include <pybind11/pybind11.h>

#include <optional>
#include <string>

#include "python/array_intake.h"

namespace fastopt::bindings {

namespace py = pybind11;

// ---- DLPack (dlpack_intake.cpp)

// The device obj.__dlpack_device__() names: (device_type, device_id) with CPU, CUDA host, CUDA or CUDA
// managed memory; TypeError / ValueError naming `where` for any other answer.
Device dlpack_device_of(py::handle obj, const std::string& where);

// obj's memory through obj.__dlpack__(...) (`method`), for a call on `device` (ordered on the call's
// stream for CUDA). The export is held (and its deleter called) as long as the ArrayRef.
ArrayRef from_dlpack(py::handle obj, const py::object& method, const Device& device, const CallDevice& call,
                     const std::string& where);

// ---- torch.Tensor (torch_intake.cpp); fastopt never imports torch itself

bool is_torch_tensor(py::handle obj, const std::string& where);  // false until someone imported torch
Device torch_device(py::handle obj, const std::string& where);
// The tensor's memory; the ArrayRef holds the tensor's storage, so that memory stays valid for the call
// even if the tensor is given another storage meanwhile (set_(), by the caller's code or another thread).
ArrayRef from_torch(py::handle obj, const Device& device, const std::string& where);

// ---- __cuda_array_interface__ (cuda_interface_intake.cpp)

struct CudaInterface {
  ArrayRef array;                // everything but the device
  std::optional<int64_t> stream; // the interface's "stream" (v3), when given
};

// Reads and checks the interface dict (`value`, the attribute's value) of obj: TypeError / ValueError
// naming `where` for anything that is not a well-formed, unmasked interface.
CudaInterface read_cuda_interface(py::handle obj, py::handle value, const std::string& where);

// ---- shared

// True for arrays of an immutable framework (JAX): never written in place.
bool immutable_producer(py::handle obj, const std::string& where);

}  // namespace fastopt::bindings
