#!/bin/bash
# Runs the GPU losses (csrc/cuda/loss_*.cu and their loss_*.cuh headers) on the CPU, without a GPU, against the CPU loops (csrc/cpu/loss_loops.h).
# The kernel launches are rewritten to emu_launch (transform.py); emu_cuda_runtime.h runs every CUDA thread
# of a block on its own std::thread, with std::barrier for __syncthreads/__syncwarp and the shuffles.
# It checks the index arithmetic, the reduction trees, the in-place order and the uniform-barrier rule
# (a lane that skips a shuffle deadlocks); it says nothing about speed or about the real memory model.
#   tools/cuda_emu/run.sh            default constants, the quick suite (about 2 minutes on 2 cores)
#   tools/cuda_emu/run.sh small      tiny chunk / grid caps: the chunked sums and grid-stride loops
#   tools/cuda_emu/run.sh tsan       ThreadSanitizer over a few cases (about 10 minutes)
#   tools/cuda_emu/run.sh full       the quick suite plus C = 17000
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/fake"
cp "$here/emu_cuda_runtime.h" "$work/fake/cuda_runtime.h"
mode="${1:-quick}"
constants=()
flags=(-O1)
case "$mode" in
  small) constants=(kSumChunk=64 kMaxRowBlocks=3 kMaxLabelBlocks=2) ;;
  tsan) constants=(kSumChunk=64 kMaxRowBlocks=3); flags=(-O1 -g -fsanitize=thread) ;;
esac
# The transformed copies go to $work/emu/cuda/, found before csrc/cuda/ by the includes; test_losses.cpp
# includes every loss_*.cu (one translation unit: the headers are #pragma once).
sources=$(cd "$root/csrc" && ls cuda/loss_*.cu cuda/loss_*.cuh)
python3 "$here/transform.py" "$root/csrc" "$work/emu" $sources -- "${constants[@]}"
cp "$here/test_losses.cpp" "$work/"
g++ -std=c++20 "${flags[@]}" -w -I"$work/fake" -I"$work/emu" -I"$root/csrc/include" -I"$root/csrc" "$work/test_losses.cpp" \
  "$root/csrc/cpu/cpu_info.cpp" \
  -o "$work/test_losses" -pthread
"$work/test_losses" "$mode"
