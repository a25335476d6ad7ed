#pragma once
// Softmax over the last dimension computed in float32 whatever the storage type: for bfloat16
// attention scores it replaces diffusers' upcast → softmax → downcast (three passes and two
// float32 copies) by one pass with the same single rounding at the end.
#include <ATen/core/Tensor.h>

#include "kernels/isa.h"

namespace cm::kernels {

// x: CPU float32 or bfloat16; the result has x's dtype and shape, contiguous.
at::Tensor softmax_last_dim(const at::Tensor& x, Isa isa = best_isa());

}  // namespace cm::kernels
