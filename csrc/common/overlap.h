// Which arrays of one update may share memory, shared by the Python entry points and the C ABI.
//
// An array the update writes (a parameter, a state) may share no byte with any other array of the
// update: its writes would change what another operand reads, or another write, mid-update. Arrays it
// only reads (the gradients) may share memory with one another, as torch.optim reads them: two
// parameters handed one gradient tensor, or gradients that are overlapping views of one buffer.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

namespace fastopt {

// Range: any struct with `uintptr_t begin, end` (one past the last byte; empty ranges are left out by
// the caller) and `bool written`. Sorts the ranges by their first byte and returns the positions (in
// that order) of the first two that may not share memory, the earlier one first; nullopt if none.
//
// O(n log n): scanning in order of first byte, a range meets an earlier one exactly when it starts
// before that one's end, so only the largest end so far matters, of any range (for a written one)
// and of the written ranges (for a read one).
template <typename Range>
std::optional<std::pair<size_t, size_t>> find_shared_write(std::vector<Range>& ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
  constexpr size_t kNone = SIZE_MAX;
  size_t furthest = kNone, furthest_written = kNone;  // the earlier ranges reaching furthest
  for (size_t i = 0; i < ranges.size(); ++i) {
    const Range& r = ranges[i];
    const size_t other = r.written ? furthest : furthest_written;
    if (other != kNone && r.begin < ranges[other].end) return std::make_pair(other, i);
    if (furthest == kNone || r.end > ranges[furthest].end) furthest = i;
    if (r.written && (furthest_written == kNone || r.end > ranges[furthest_written].end)) furthest_written = i;
  }
  return std::nullopt;
}

}  // namespace fastopt
