// The XLA FFI handlers fastopt.jax registers: one target name, a CPU handler and a CUDA handler
// (registered only when this build has the CUDA backend, and the handler exists). Bound to Python in jax_bindings.cpp.
#pragma once

#include <vector>

#include "xla/ffi/api/c_api.h"

namespace fastopt::jax_ffi {

struct Target {
  const char* name;
  XLA_FFI_Handler* cpu;
  XLA_FFI_Handler* cuda;
};

std::vector<Target> update_targets();  // optim_handlers.cpp
std::vector<Target> rule_targets();    // rule_handlers.cpp: fastopt_rule_<name>
std::vector<Target> adafactor_targets();  // adafactor_handlers.cpp: fastopt_adafactor (CUDA: refused by name)
std::vector<Target> loss_targets();    // loss_handlers.cpp
// The CUDA handlers' code bound as CPU handlers that record instead of launching (host_test.h), in
// `cpu`; for tests only.
std::vector<Target> update_host_test_targets();
std::vector<Target> rule_host_test_targets();
std::vector<Target> loss_host_test_targets();
std::vector<Target> adafactor_host_test_targets();

}  // namespace fastopt::jax_ffi
