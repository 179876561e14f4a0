// Chooses the kernel table at first use: the best instruction set that is both compiled in and
// supported by this CPU (and its operating system, which __builtin_cpu_supports checks for the
// AVX state). use_isa() moves to a lower one (FASTOPT_CPU_ISA, tests).
#include <atomic>
#include <stdexcept>

#include "cpu/kernel_table.h"

namespace fastopt::cpu {

// One table per instruction set built (see CMakeLists.txt: FASTOPT_ISA_<NAME> definitions).
namespace baseline {
const KernelTable& table();
}
#ifdef FASTOPT_ISA_AVX2
namespace avx2 {
const KernelTable& table();
}
#endif
#ifdef FASTOPT_ISA_AVX512
namespace avx512 {
const KernelTable& table();
}
#endif

namespace {

struct Isa {
  const char* name;
  const KernelTable& (*table)();
  bool (*supported)();
};

// Best first.
const std::vector<Isa>& all_isas() {
  static const std::vector<Isa> isas = {
#ifdef FASTOPT_ISA_AVX512
      {"avx512", &avx512::table,
       [] {
         return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
       }},
#endif
#ifdef FASTOPT_ISA_AVX2
      {"avx2", &avx2::table,
       [] {
         return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
       }},
#endif
      {"baseline", &baseline::table, [] { return true; }},
  };
  return isas;
}

const KernelTable* best_supported() {
  for (const Isa& isa : all_isas()) {
    if (isa.supported()) return &isa.table();
  }
  return &baseline::table();
}

std::atomic<const KernelTable*> active{nullptr};

}  // namespace

const KernelTable& kernels() {
  const KernelTable* table = active.load(std::memory_order_acquire);
  if (table == nullptr) {
    table = best_supported();
    active.store(table, std::memory_order_release);
  }
  return *table;
}

std::vector<std::string> compiled_isas() {
  std::vector<std::string> names;
  for (const Isa& isa : all_isas()) names.emplace_back(isa.name);
  return names;
}

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const Isa& isa : all_isas()) {
    if (isa.supported()) names.emplace_back(isa.name);
  }
  return names;
}

std::string use_isa(const std::string& name) {
  const auto& isas = all_isas();
  size_t at = isas.size();
  for (size_t i = 0; i < isas.size(); ++i) {
    if (name == isas[i].name) at = i;
  }
  if (at == isas.size()) throw std::invalid_argument(name);
  for (size_t i = at; i < isas.size(); ++i) {
    if (isas[i].supported()) {
      active.store(&isas[i].table(), std::memory_order_release);
      return isas[i].name;
    }
  }
  return "baseline";  // unreachable: baseline is always supported
}

}  // namespace fastopt::cpu
