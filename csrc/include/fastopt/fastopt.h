// Umbrella header: the per-element math of every fastopt kernel (no Python, no I/O).
#pragma once

#include "fastopt/adagrad.h"
#include "fastopt/adam.h"
#include "fastopt/rmsprop.h"
#include "fastopt/sgd.h"
#include "fastopt/cross_entropy.h"
#include "fastopt/grad_scale.h"
#include "fastopt/hinge.h"
#include "fastopt/softmax.h"
