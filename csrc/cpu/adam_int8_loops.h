// Adam/AdamW over 8-bit blockwise state, and the blockwise quantiser itself (fastopt/quant8.h). One pass
// per block of kQuantBlock elements, in a stack buffer: read back the block's state (map[code] * absmax),
// the float32 rule adam_update (fastopt/adam.h: the float32 kernel's code, so the values between read and
// write are its values bit for bit), the block's new absmax, the nearest codes. Blocks are independent,
// so threads take whole blocks and every thread count and instruction set writes the same bits.
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

template <bool AMSGRAD, bool DECOUPLED, bool SCALED>
inline void adam_int8_block(const Int8AdamTensor& t, int64_t block, const Int8AdamCall& call, float gs,
                            const AdamScalars<float>& s) {
  const int64_t begin = block * kQuantBlock, n = std::min(kQuantBlock, t.size - begin);
  float m[kQuantBlock], v[kQuantBlock], vmax[kQuantBlock];
  dequantise_block(t.exp_avg.codes + begin, n, call.signed_map, t.exp_avg.absmax[block], m);
  dequantise_block(t.exp_avg_sq.codes + begin, n, call.unsigned_map, t.exp_avg_sq.absmax[block], v);
  if constexpr (AMSGRAD) {
    dequantise_block(t.max_exp_avg_sq.codes + begin, n, call.unsigned_map, t.max_exp_avg_sq.absmax[block], vmax);
  }
  float* __restrict p = t.param + begin;
  const float* __restrict g = t.grad + begin;
  for (int64_t j = 0; j < n; ++j) {
    float pj = p[j], mj = m[j], vj = v[j], vmaxj = AMSGRAD ? vmax[j] : 0.0f;
    adam_update<AMSGRAD, DECOUPLED>(pj, unscale_grad<SCALED>(g[j], gs), mj, vj, vmaxj, s);
    p[j] = pj;
    m[j] = mj;
    v[j] = vj;
    if constexpr (AMSGRAD) vmax[j] = vmaxj;
  }
  t.exp_avg.absmax[block] = quantise_block(m, n, call.signed_map, t.exp_avg.codes + begin);
  t.exp_avg_sq.absmax[block] = quantise_block(v, n, call.unsigned_map, t.exp_avg_sq.codes + begin);
  if constexpr (AMSGRAD) {
    t.max_exp_avg_sq.absmax[block] = quantise_block(vmax, n, call.unsigned_map, t.max_exp_avg_sq.codes + begin);
  }
}

// The table's entry. Returns found_inf (skip_nonfinite found a NaN/Inf gradient: nothing written).
inline bool adam_int8(const Int8AdamCall& call, const AdamHyper& hyper) {
  const float scale = float(hyper.scaling.grad_scale);
  const bool scaled = hyper.scaling.grad_scale != 1.0;
  int64_t total = 0;
  for (const auto& t : call.tensors) total += t.size;
  const bool threads = total >= kParallelThreshold;
  if (hyper.scaling.skip_nonfinite) {
    std::vector<unsigned char> bad(call.tensors.size(), 0);
    parallel_for(int64_t(call.tensors.size()), threads, [&](int64_t k) {
      const Int8AdamTensor& t = call.tensors[size_t(k)];
      unsigned found = 0;
      for (int64_t i = 0; i < t.size; ++i) {
        const float gi = t.grad[i];
        found |= unsigned(!is_finite_(scaled ? gi / scale : gi));
      }
      bad[size_t(k)] = found != 0;
    });
    if (std::any_of(bad.begin(), bad.end(), [](unsigned char b) { return b != 0; })) return true;
  }
  const AdamScalars<float> s = adam_scalars<float>(hyper);
  const std::vector<BlockTask> tasks = block_tasks(call.tensors.size(), [&](size_t k) { return call.tensors[k].size; });
  with_flags(
      [&](auto AMSGRAD, auto DECOUPLED, auto SCALED) {
        parallel_for(int64_t(tasks.size()), threads, [&](int64_t i) {
          const BlockTask& task = tasks[size_t(i)];
          const Int8AdamTensor& t = call.tensors[size_t(task.tensor)];
          for (int64_t b = task.first_block; b < task.first_block + task.blocks; ++b) {
            adam_int8_block<AMSGRAD.value, DECOUPLED.value, SCALED.value>(t, b, call, scale, s);
          }
        });
      },
      hyper.amsgrad, adam_decoupled_form(hyper), scaled);
  return false;
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
