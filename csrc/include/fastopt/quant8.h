// Blockwise dynamic 8-bit quantisation (Dettmers et al. 2022, "8-bit Optimizers via Block-wise
// Quantization"), the layout of bitsandbytes' 8-bit optimizers: a tensor of n values is cut into blocks
// of kQuantBlock (256) consecutive elements (the last one may be shorter); block b keeps one float32
// absmax[b] = max |x| over the block, and each element one uint8 code c, the index of the map value
// nearest to x / absmax[b]. A value is read back as map[c] * absmax[b].
//
// The maps (256 sorted float32 values in [-1, 1] or [0, 1], bitsandbytes' create_dynamic_map: signed
// for first moments, unsigned for second moments) are built on the Python side
// (fastopt/_quantized.py) and handed to the kernels; this header only uses them.
//
// Nearest: the number i of map values <= x is found by a branch-free binary search over the sorted map;
// then x goes to map[i-1] or map[i], whichever is closer, the lower one on a tie (the first minimum of
// |x - map|, as an argmin over the map picks). x below map[0] gets code 0, above map[255] code 255.
// A block whose absmax is 0 (all zeros) is stored as the code of the map's 0 with absmax 0.
#pragma once

#include <cstdint>

#include "fastopt/macros.h"

namespace fastopt {

constexpr int64_t kQuantBlock = 256;

FASTOPT_HD uint8_t quant8_nearest(const float* map, float x) {
  int i = 0;  // after the loop: the number of map values <= x (0..256)
  for (int s = 128; s >= 1; s >>= 1) i += (map[i + s - 1] <= x) ? s : 0;  // i <= 255 here
  i += (map[i] <= x) ? 1 : 0;
  if (i == 0) return 0;
  if (i == 256) return 255;
  // (in double: the difference of two float32 values is exact there, so a near-tie is decided exactly)
  const double below = double(x) - double(map[i - 1]), above = double(map[i]) - double(x);
  return uint8_t(above < below ? i : i - 1);
}

}  // namespace fastopt
