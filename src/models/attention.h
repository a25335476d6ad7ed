// Spatial self-attention of the UNet's attention blocks (diffusers.models.attention_processor.
// Attention built with _from_deprecated_attn_block=True, residual_connection=True).
#pragma once

#include <optional>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/normalization.h>

#include "models/layers.h"

namespace cm::models {

class AttentionImpl : public torch::nn::Module {
 public:
  // norm_groups: GroupNorm before the projections, or none.
  AttentionImpl(int64_t channels, int64_t head_dim, double eps, std::optional<int64_t> norm_groups,
                double rescale_output_factor);
  at::Tensor forward(const at::Tensor& x);

  torch::nn::GroupNorm group_norm{nullptr};
  Linear to_q{nullptr}, to_k{nullptr}, to_v{nullptr};
  torch::nn::ModuleList to_out{nullptr};  // [Linear, Dropout], as in diffusers

 private:
  int64_t heads_;
  double scale_;
  double rescale_output_factor_;
};
TORCH_MODULE(Attention);

}  // namespace cm::models
