// Adafactor's fixed tiling and order of additions (fastopt/adafactor.h), which the CPU loops
// (csrc/cpu/adafactor_loops.h) and the CUDA passes (csrc/cuda/adafactor_passes.cuh) both keep, so that a
// step gives the same bits on either, for any thread count and instruction set.
//
// Every sum is accumulated in double. Factored tensor (batch x rows x cols), cut into tiles of
// kAdafactorTileCols columns x as many rows as make about kAdafactorBlockElements, from its first element:
//   a row segment (one row of a tile): its terms go to kSumLanes lanes (column j of the segment, counted
//     from the tile's first column, into lane j % kSumLanes), each lane adds in column order, then the
//     lanes are added in lane order. So: the row sums of g^2 (one per segment), and the segment totals of
//     p^2 (pass 1) and U^2 (pass 2).
//   a column block (one column of a tile): g^2 down the tile's rows, in row order.
//   a tile's total of p^2 or U^2: its segments' totals, in row order.
//   a tensor's total: its tiles' totals, in tile order (AdafactorTiles::at's order).
//   row_var's sum: the segments of a row, in tile order; col_var's: the column blocks, in row-block order;
//   the mean of row_var for the row scale: the rows of one matrix, in order.
// Unfactored tensor (n elements): blocks of kAdafactorBlockElements; a block adds p^2 and U^2 each into
// kSumLanes lanes (element i into lane i % kSumLanes, in element order), then its lanes in order; the
// tensor's total adds the blocks in order.
#pragma once

#include <cstdint>

#include "fastopt/macros.h"
#include "fastopt/tensor_sums.h"

namespace fastopt {

constexpr int64_t kAdafactorBlockElements = int64_t(1) << 16;
// Columns of one tile (a tile's column partial sums fit in L1 as doubles on the CPU).
constexpr int64_t kAdafactorTileCols = 2048;

// (Plain structs and FASTOPT_HD free functions: internal linkage on the host, as macros.h explains, so
// the per-instruction-set copies of the CPU loops stay apart.)
struct AdafactorTiles {
  int64_t batch, rows, cols;
  int64_t tile_cols, col_tiles, block_rows, row_blocks;
};

struct AdafactorTile {
  int64_t b, rb, ct, r0, r1, c0, c1;
};

FASTOPT_HD AdafactorTiles adafactor_tiles(int64_t batch, int64_t rows, int64_t cols) {
  AdafactorTiles t{batch, rows, cols, 0, 0, 0, 0};
  t.tile_cols = cols < kAdafactorTileCols ? cols : kAdafactorTileCols;
  t.col_tiles = t.tile_cols > 0 ? (cols + t.tile_cols - 1) / t.tile_cols : 0;
  const int64_t per_block = t.tile_cols > 0 ? kAdafactorBlockElements / t.tile_cols : 1;
  t.block_rows = per_block > 1 ? per_block : 1;
  t.row_blocks = (rows + t.block_rows - 1) / t.block_rows;
  return t;
}

// The number of tiles.
FASTOPT_HD int64_t tile_count(const AdafactorTiles& t) { return t.batch * t.row_blocks * t.col_tiles; }

// Row segments: one per (matrix, row, column tile), segment (b * rows + r) * col_tiles + ct.
FASTOPT_HD int64_t segment_count(const AdafactorTiles& t) { return t.batch * t.rows * t.col_tiles; }

// Tile i, in the order of the tensor's total: column tiles fastest, then row blocks, then matrices.
FASTOPT_HD AdafactorTile tile_at(const AdafactorTiles& t, int64_t i) {
  const int64_t ct = i % t.col_tiles;
  const int64_t rb = (i / t.col_tiles) % t.row_blocks;
  const int64_t b = i / (t.col_tiles * t.row_blocks);
  const int64_t r0 = rb * t.block_rows, c0 = ct * t.tile_cols;
  return {b, rb, ct, r0, r0 + t.block_rows < t.rows ? r0 + t.block_rows : t.rows, c0,
          c0 + t.tile_cols < t.cols ? c0 + t.tile_cols : t.cols};
}

}  // namespace fastopt
