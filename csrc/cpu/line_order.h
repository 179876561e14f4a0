// The order an element loop walks a chunk in: one cache line of every operand at a time, from the
// chunk's first line up or from its last line down, whichever the operands' places in memory favour.
// The updates are element-wise, so the order changes no bit of the result.
//
// Why: a read-modify-write loop over several arrays (AdamW reads four and writes three) slows down when
// one array it writes starts a little above (walking up) or below (walking down) another it reads, at the
// same offset within a 4 KiB page: the processor matches a read against the pending writes by the low 12
// bits of the address, so the read of the next line waits for the write of this one (4K aliasing). NumPy's
// large arrays start 16 bytes past a page and torch's 64, so a torch parameter with NumPy state is such a
// layout. One thread, 16M float32, `python bench/bench_layout.py` (offsets param,grad,states), Zen 4:
// walking up, AdamW 9.9 ms at 0,0,0,0 and 13.9 ms at 64,16,16,16; walking down, 12.3 ms at 64,16,16,16 and
// 14.6 ms at 16,64,64,64, the mirror. So each chunk walks the way fewer of its pairs alias (lines_down).
// Lines, not larger blocks: walking down over blocks of 1 KiB or more, each walked up, was slower still.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

#include "fastopt/macros.h"

// Put before every element loop that runs a line block. There its trip count is the constant line
// length, and GCC would unroll a short body (SGD without momentum, a line of doubles) completely
// before the vectoriser sees it and leave the copies scalar; kept a loop, it vectorises to one vector
// per operand (tests/kernels/test_loop_vectorised.py checks every loop).
#define FASTOPT_LINE_LOOP _Pragma("GCC unroll 1")

namespace fastopt::cpu {

// Elements of storage X in one 64-byte line. A loop over operands of several widths walks lines of
// its narrowest (bfloat16 params with float32 state: 32 elements, two lines of the state): with fewer
// than one full vector of the narrow type, GCC vectorised the line at half width or not at all.
template <typename X>
constexpr int64_t kLineElements = int64_t(64 / sizeof(X));

// How far apart (bytes, modulo a 4 KiB page) a written line and a line read after it must be for the
// read to wait on the write (4K aliasing, above): a few lines of the loop in flight.
constexpr uintptr_t kAliasWindow = 256;

// A chunk of fewer than kAliasMinLines lines walks up without asking: it is in cache or too short for the
// difference to show, and the question costs a few nanoseconds a tensor.
constexpr int64_t kAliasMinLines = 64;

// True when the chunk's lines should be walked down: fewer (written operand, other operand) pairs
// alias that way than walking up. Walking up, a line of operand y is read after the lines of x below it
// were written, so x just above y in the page is the risk: (x - y) mod 4096 in (0, kAliasWindow); walking
// down, the mirror. ptrs[j] is operand j (nullptr: unused), `written` a bit mask of the written ones;
// `lines` the chunk's length in lines. The same layout on every call gives the same order, and the order
// changes no bit of the result.
template <typename Ptr, size_t N>
inline bool lines_down(int64_t lines, const std::array<Ptr, N>& ptrs, unsigned written) {
  if (lines < kAliasMinLines) return false;
  int up = 0, down = 0;
  for (size_t x = 0; x < N; ++x) {
    if (ptrs[x] == nullptr || !(written & (1u << x))) continue;
    for (size_t y = 0; y < N; ++y) {
      if (y == x || ptrs[y] == nullptr) continue;
      const uintptr_t d = (reinterpret_cast<uintptr_t>(ptrs[x]) - reinterpret_cast<uintptr_t>(ptrs[y])) % 4096;
      up += d != 0 && d < kAliasWindow;
      down += d > 4096 - kAliasWindow;
    }
  }
  return down < up;
}

// block(at, count) over [0, n): the last n % L elements first, then every full line of L elements, the
// lowest first or, when `down`, the highest first. count is the constant L for the full lines, so once
// block is inlined each line is one vector (or a few) per operand, with the hyperparameters and pointers
// set up once per chunk (passed as an opaque count instead, every line re-ran the element loop's setup
// and AdamW lost the gain).
template <int64_t L, typename Block>
FASTOPT_ALWAYS_INLINE inline void for_each_line(int64_t n, bool down, Block&& block) {
  const int64_t lines = n / L;
  if (lines * L != n) block(lines * L, n - lines * L);
  for (int64_t i = 0; i < lines; ++i) block((down ? lines - 1 - i : i) * L, L);
}

}  // namespace fastopt::cpu
