// Host simulation of Adafactor's CUDA passes (csrc/cuda/adafactor_passes.cuh), part of
// fastopt_cuda_simulate (simulate.cu's main calls simulate_adafactor()). The passes run with a runner that
// executes each launch's items on the host in reverse order (a pass whose item read another item's slot
// of the same pass would see the scratch's NaN, or the value of a later launch), and every array is
// compared bit for bit with the CPU kernel (fastopt_cpu) after each of several steps: matrices with
// several column tiles and row blocks, batches of matrices, a single column, empty tensors, vectors of
// several blocks, a scalar; float32 and float64; the hyperparameters' branches. Every array sits between
// guard elements, so a write out of bounds shows.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/kernel_table.h"
#include "cuda/adafactor_passes.cuh"

using namespace fastopt;

namespace {

struct ItemsRunner {
  int launches = 0;

  struct Scratch {
    std::vector<double> data;
    Scratch(ItemsRunner&, int64_t doubles) : data(size_t(doubles), std::numeric_limits<double>::quiet_NaN()) {}
    double* get() { return data.data(); }
  };

  template <typename Pass>
  void items(int64_t n, const Pass& pass) {
    if (n <= 0) return;
    ++launches;
    for (int64_t i = n - 1; i >= 0; --i) pass(i);
  }
};

constexpr int64_t kGuard = 8;

// An array of n elements between kGuard guard elements on each side.
template <typename T>
struct Guarded {
  std::vector<T> data;
  explicit Guarded(int64_t n) : data(size_t(n + 2 * kGuard), T(-7.25)) {}
  T* get() { return data.data() + kGuard; }
  int64_t size() const { return int64_t(data.size()) - 2 * kGuard; }
};

template <typename T>
bool same_bits(const Guarded<T>& a, const Guarded<T>& b) {
  return a.data.size() == b.data.size() && std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(T)) == 0;
}

// One parameter tensor with its state, as the binding lays it out.
template <typename T>
struct Case {
  std::vector<int64_t> shape;
  Guarded<T> param, grad, row_var, col_var, variance;
  int64_t batch = 1, rows = 1, cols = 1;
  bool factored;

  static int64_t numel(const std::vector<int64_t>& s) {
    int64_t n = 1;
    for (int64_t d : s) n *= d;
    return n;
  }

  explicit Case(const std::vector<int64_t>& s)
      : shape(s), param(numel(s)), grad(numel(s)), row_var(0), col_var(0), variance(0), factored(s.size() >= 2) {
    if (factored) {
      rows = s[s.size() - 2];
      cols = s.back();
      for (size_t d = 0; d + 2 < s.size(); ++d) batch *= s[d];
      row_var = Guarded<T>(batch * rows);
      col_var = Guarded<T>(batch * cols);
    } else {
      cols = numel(s);
      variance = Guarded<T>(cols);
    }
    for (Guarded<T>* g : {&row_var, &col_var, &variance}) {
      for (int64_t i = 0; i < g->size(); ++i) g->get()[i] = T(0);
    }
  }

  cpu::AdafactorTensor<T> tensor() {
    return {param.get(), grad.get(), factored ? row_var.get() : nullptr, factored ? col_var.get() : nullptr,
            factored ? nullptr : variance.get(), batch, rows, cols, factored};
  }
};

std::string shape_text(const std::vector<int64_t>& s) {
  std::string t = "(";
  for (size_t i = 0; i < s.size(); ++i) t += (i ? "," : "") + std::to_string(s[i]);
  return t + ")";
}

template <typename T>
void fill(Guarded<T>& a, std::mt19937_64& rng, double scale) {
  std::normal_distribution<double> normal(0.0, scale);
  for (int64_t i = 0; i < a.size(); ++i) a.get()[i] = T(normal(rng));
}

int failures = 0;
int checks = 0;

template <typename T>
void run_case(const std::vector<std::vector<int64_t>>& shapes, AdafactorHyper hyper, int steps, uint64_t seed,
              const char* what) {
  std::mt19937_64 rng(seed);
  std::vector<Case<T>> cpu_side, gpu_side;
  for (const auto& s : shapes) cpu_side.emplace_back(s);
  for (Case<T>& c : cpu_side) fill(c.param, rng, 1.0);
  gpu_side = cpu_side;
  ItemsRunner runner;
  for (int step = 1; step <= steps; ++step) {
    std::vector<cpu::AdafactorTensor<T>> cpu_list, gpu_list;
    for (size_t i = 0; i < shapes.size(); ++i) {
      fill(cpu_side[i].grad, rng, step == 2 ? 1e-3 : 1.0);
      gpu_side[i].grad = cpu_side[i].grad;
      cpu_list.push_back(cpu_side[i].tensor());
      gpu_list.push_back(gpu_side[i].tensor());
    }
    hyper.step = step;
    cpu::kernels().of<T>().adafactor(cpu_list, hyper);
    cuda::adafactor_passes::run(runner, gpu_list, hyper);
    for (size_t i = 0; i < shapes.size(); ++i) {
      Case<T>& a = cpu_side[i];
      Case<T>& b = gpu_side[i];
      const bool same = same_bits(a.param, b.param) && same_bits(a.row_var, b.row_var) &&
                        same_bits(a.col_var, b.col_var) && same_bits(a.variance, b.variance);
      ++checks;
      if (!same) {
        ++failures;
        std::printf("FAIL adafactor %s %s %s step %d: the passes' arrays differ from the CPU kernel's\n", what,
                    sizeof(T) == 4 ? "float32" : "float64", shape_text(shapes[i]).c_str(), step);
      }
    }
  }
}

template <typename T>
void run_all(uint64_t seed) {
  const std::vector<std::vector<int64_t>> shapes = {
      {100, 2100},     // two column tiles, four row blocks
      {3, 40, 70},     // a batch of matrices
      {70000, 1},      // one column: two row blocks of 65536 rows
      {5, 4099},       // three column tiles, the last of 3 columns
      {37},            // a vector in one block
      {150001},        // three blocks, the last of 18 elements
      {},              // a scalar
      {0},             // empty
      {0, 5},          // no rows: col_var from an empty mean
      {6, 0},          // no columns: row_var from an empty mean
      {2, 0, 3},       // no matrices
  };
  AdafactorHyper base{};
  base.lr = 1e-2;
  base.beta2_decay = -0.8;
  base.eps1 = std::nan("");
  base.eps2 = 1e-3;
  base.d = 1.0;
  base.weight_decay = 0.0;
  base.maximize = false;
  run_case<T>(shapes, base, 3, seed, "defaults");

  AdafactorHyper other = base;
  other.lr = 0.3;  // (above 1/sqrt(t) from step 12 on: rho switches branch)
  other.beta2_decay = -0.5;
  other.eps1 = 1e-30;
  other.eps2 = 0.5;
  other.d = 3.5;
  other.weight_decay = 0.25;
  other.maximize = true;
  run_case<T>(shapes, other, 14, seed + 1, "maximize, weight decay, eps1 set, d 3.5");
}

}  // namespace

// Returns the number of failures; adds its checks to *checks_out.
int simulate_adafactor(int* checks_out) {
  run_all<float>(71);
  run_all<double>(73);
  std::printf("adafactor passes: %d checks, %d failed\n", checks, failures);
  *checks_out += checks;
  return failures;
}
