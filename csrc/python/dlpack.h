// The DLPack data structures, as the DLPack specification (dmlc/dlpack, version 1.x) defines their
// C ABI: the struct layouts and constants below are that ABI, declared here rather than vendored.
// fastopt consumes them: an object's __dlpack__() returns a PyCapsule named "dltensor_versioned"
// (DLManagedTensorVersioned, DLPack >= 1.0) or "dltensor" (DLManagedTensor, older producers); the
// consumer renames it "used_..." and calls the deleter when it no longer needs the memory.
#pragma once

#include <cstdint>

namespace fastopt::dlpack {

// DLDeviceType values fastopt uses.
constexpr int32_t kCPU = 1;
constexpr int32_t kCUDA = 2;
constexpr int32_t kCUDAHost = 3;     // pinned host memory: the CPU reads it like any host memory
constexpr int32_t kCUDAManaged = 13; // unified memory: treated as the device it belongs to

// DLDataTypeCode values fastopt uses.
constexpr uint8_t kInt = 0;
constexpr uint8_t kUInt = 1;
constexpr uint8_t kFloat = 2;
constexpr uint8_t kBfloat = 4;

struct Device {
  int32_t device_type;
  int32_t device_id;
};

struct DataType {
  uint8_t code;
  uint8_t bits;
  uint16_t lanes;
};

struct Tensor {
  void* data;
  Device device;
  int32_t ndim;
  DataType dtype;
  int64_t* shape;
  int64_t* strides;  // in elements; nullptr means compact row-major
  uint64_t byte_offset;
};

struct ManagedTensor {
  Tensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(ManagedTensor* self);
};

struct Version {
  uint32_t major;
  uint32_t minor;
};

constexpr uint64_t kFlagReadOnly = 1ULL << 0;
constexpr uint64_t kFlagIsCopied = 1ULL << 1;

struct ManagedTensorVersioned {
  Version version;
  void* manager_ctx;
  void (*deleter)(ManagedTensorVersioned* self);
  uint64_t flags;
  Tensor dl_tensor;
};

}  // namespace fastopt::dlpack
