#pragma once
// Group norm fused with its affine, an optional per-channel input offset and SiLU: the
// norm → (scale/shift) → SiLU chain that opens every ResNet block, done in two passes over the
// activation instead of the four to six of at::group_norm, the broadcasts and at::silu.
#include <ATen/core/Tensor.h>

#include <optional>

#include "kernels/isa.h"

namespace cm::kernels {

// True where group_norm_act takes x: a CPU float32 or bfloat16 tensor [N, C, ...] stored
// contiguous (NCHW) or channels-last (NHWC), C divisible by `groups`, with no gradient wanted.
bool group_norm_act_supported(const at::Tensor& x, int64_t groups);

// silu?(group_norm(x + offset)·weight + bias), the norm over `groups` channel groups of each
// sample. weight and bias are [C], or [N, C] for one affine per sample (a folded time
// scale/shift); offset, if given, is [N, C] (a time embedding added before the norm). Statistics
// in float64 (from float32 partial sums shifted by each channel's first value), the affine and
// SiLU in float32, one rounding to x's dtype. The output has x's layout.
at::Tensor group_norm_act(const at::Tensor& x, int64_t groups, const at::Tensor& weight,
                          const at::Tensor& bias, double eps, bool silu,
                          const std::optional<at::Tensor>& offset = std::nullopt,
                          Isa isa = best_isa());

}  // namespace cm::kernels
