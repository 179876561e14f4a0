// Autograd's version counters. torch bumps a tensor's version at every in-place op, and backward()
// refuses a graph that saved a tensor whose version has moved since: that is how it notices an
// update that would silently change the gradient. fastopt writes through raw pointers, which torch
// does not see, so every call bumps the versions of the torch tensors it writes (a detached tensor
// shares its version counter with the original, so `adam_(w.detach(), ...)` bumps w's).
#pragma once

#include <vector>

#include "python/array_intake.h"

namespace fastopt::bindings {

// Bumps the version of every torch tensor among the written arguments (once each; nothing, and no
// cost beyond a flag test per array, when none is a torch tensor). Called once everything is checked,
// before the kernels run, with the GIL held.
void mark_written(const ArrayArg& params, const std::vector<const ArrayArg*>& others);
void mark_written(const ArrayRef& written);

}  // namespace fastopt::bindings
