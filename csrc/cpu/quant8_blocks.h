// Blockwise 8-bit state on the CPU (fastopt/quant8.h, issue 18): one block read back, one block
// quantised, the blockwise quantiser's entries, the pieces of work the 8-bit updates share out among
// threads, and their found_inf pre-pass. Used by Adam's adam_int8_loops.h and SGD/Adagrad/RMSprop's
// int8_state_loops.h.
//
// Included only by kernels_for_isa.cpp, inside the instruction set's namespace, after optim_loops.h.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "cpu/adam_int8_call.h"
#include "cpu/optim_loops.h"
#include "fastopt/quant8.h"

namespace fastopt::cpu::FASTOPT_ISA_NS {

// absmax of x[0, n) and the nearest codes of x / absmax (all zeros: absmax 0, the map's code of 0). The
// code loop is quant8_nearest spelled out on a local pointer, branch-free, so that it vectorises (one
// gather per element).
inline float quantise_block(const float* __restrict x, int64_t n, const Quant8Map& map,
                            uint8_t* __restrict codes) {
  // (the max over 16 lanes, then over the lanes, so that it vectorises; max is exact in any order, and a
  // NaN is passed over in either)
  constexpr int64_t kLanes = 16;
  float lanes[kLanes] = {};
  const int64_t whole = n - n % kLanes;
  for (int64_t j = 0; j < whole; j += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) lanes[l] = std::max(lanes[l], std::fabs(x[j + l]));
  }
  float top = 0.0f;
  for (int64_t j = whole; j < n; ++j) top = std::max(top, std::fabs(x[j]));
  for (int64_t l = 0; l < kLanes; ++l) top = std::max(top, lanes[l]);
  if (top == 0.0f) {
    const uint8_t zero = quant8_nearest(map, 0.0f);
    for (int64_t j = 0; j < n; ++j) codes[j] = zero;
    return 0.0f;
  }
  const int32_t* __restrict lut = map.lut;
  for (int64_t j = 0; j < n; ++j) {
    const float q = x[j] / top;
    codes[j] = quant8_code(uint32_t(lut[quant8_bucket(q)]), quant8_order_key(q));
  }
  return top;
}

inline void dequantise_block(const uint8_t* __restrict codes, int64_t n, const Quant8Map& q, float absmax,
                             float* __restrict out) {
  const float* __restrict map = q.values;
  for (int64_t j = 0; j < n; ++j) out[j] = map[codes[j]] * absmax;
}

// The (tensor, first block) of every piece of work: up to kBlocksPerTask blocks of one tensor.
constexpr int64_t kBlocksPerTask = 64;  // 16K elements

struct BlockTask {
  int32_t tensor;
  int64_t first_block, blocks;
};

template <typename SizeOf>
std::vector<BlockTask> block_tasks(size_t count, SizeOf&& size_of) {
  std::vector<BlockTask> tasks;
  for (size_t k = 0; k < count; ++k) {
    const int64_t nblocks = (size_of(k) + kQuantBlock - 1) / kQuantBlock;
    for (int64_t b = 0; b < nblocks; b += kBlocksPerTask) {
      tasks.push_back({int32_t(k), b, std::min(kBlocksPerTask, nblocks - b)});
    }
  }
  return tasks;
}

// body(k, b) for every block b of every tensor k of `tensors` (each with .size), threads (when `threads`)
// taking whole tasks of up to kBlocksPerTask blocks: every thread count writes the same bits.
template <typename Tensors, typename Body>
void for_each_quant_block(const Tensors& tensors, bool threads, Body&& body) {
  const std::vector<BlockTask> tasks = block_tasks(tensors.size(), [&](size_t k) { return tensors[k].size; });
  parallel_for(int64_t(tasks.size()), threads, [&](int64_t i) {
    const BlockTask& task = tasks[size_t(i)];
    for (int64_t b = task.first_block; b < task.first_block + task.blocks; ++b) body(size_t(task.tensor), b);
  });
}

// The element count of `tensors` (each with .size), and whether a call over them takes threads.
template <typename Tensors>
bool int8_call_threads(const Tensors& tensors) {
  int64_t total = 0;
  for (const auto& t : tensors) total += t.size;
  return total >= kParallelThreshold;
}

// True when a gradient of `tensors` (each with .grad and .size) holds a NaN/Inf once unscaled. Read
// in chunks (parallel.h, any_chunk), so one large tensor is read on every thread; SCALED is a
// compile-time flag, as in optim_loops.h, so the loop vectorises either way.
template <typename Tensors>
bool any_nonfinite_grad_int8(const Tensors& tensors, float scale, bool scaled) {
  std::vector<int64_t> sizes;
  sizes.reserve(tensors.size());
  for (const auto& t : tensors) sizes.push_back(t.size);
  bool found = false;
  with_flags(
      [&](auto SCALED) {
        found = any_chunk(sizes, [&](int32_t k, int64_t begin, int64_t end) {
          const float* __restrict g = tensors[size_t(k)].grad;
          unsigned bad = 0;
          for (int64_t i = begin; i < end; ++i) bad |= unsigned(!is_finite_(SCALED.value ? g[i] / scale : g[i]));
          return bad != 0;
        });
      },
      scaled);
  return found;
}

inline void quantize8(const Quant8Call& c) {
  const int64_t nblocks = (c.size + kQuantBlock - 1) / kQuantBlock;
  parallel_for(nblocks, c.size >= kParallelThreshold, [&](int64_t b) {
    const int64_t begin = b * kQuantBlock, n = std::min(kQuantBlock, c.size - begin);
    c.absmax[b] = quantise_block(c.values + begin, n, c.map, c.codes + begin);
  });
}

inline void dequantize8(const Quant8Call& c) {
  const int64_t nblocks = (c.size + kQuantBlock - 1) / kQuantBlock;
  parallel_for(nblocks, c.size >= kParallelThreshold, [&](int64_t b) {
    const int64_t begin = b * kQuantBlock, n = std::min(kQuantBlock, c.size - begin);
    dequantise_block(c.codes + begin, n, c.map, c.absmax[b], c.values + begin);
  });
}

}  // namespace fastopt::cpu::FASTOPT_ISA_NS
