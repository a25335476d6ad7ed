// ResnetBlock2D, Downsample2D and Upsample2D (diffusers.models.resnet / downsampling / upsampling).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/normalization.h>

#include "models/layers.h"

namespace cm::models {

struct ResnetOptions {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t temb_channels = 0;
  int64_t groups = 32;
  double eps = 1e-5;
  bool scale_shift = false;  // resnet_time_scale_shift == "scale_shift"
  double output_scale_factor = 1.0;
  double dropout = 0.0;  // before conv2; identity in eval mode
  bool up = false;    // nearest-neighbour x2 before conv1 (and on the shortcut)
  bool down = false;  // 2x2 average pool before conv1 (and on the shortcut)
};

class ResnetBlock2DImpl : public torch::nn::Module {
 public:
  explicit ResnetBlock2DImpl(const ResnetOptions& options);
  at::Tensor forward(const at::Tensor& x, const at::Tensor& temb);

  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  Conv2d conv1{nullptr}, conv2{nullptr}, conv_shortcut{nullptr};
  Linear time_emb_proj{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  ResnetOptions options_;
};
TORCH_MODULE(ResnetBlock2D);

// Strided 3x3 convolution; parameters under "conv" as diffusers names them (name="op").
class Downsample2DImpl : public torch::nn::Module {
 public:
  Downsample2DImpl(int64_t channels, int64_t padding);
  at::Tensor forward(const at::Tensor& x);
  Conv2d conv{nullptr};

 private:
  int64_t padding_;
};
TORCH_MODULE(Downsample2D);

// Nearest-neighbour x2 then a 3x3 convolution.
class Upsample2DImpl : public torch::nn::Module {
 public:
  explicit Upsample2DImpl(int64_t channels);
  at::Tensor forward(const at::Tensor& x);
  Conv2d conv{nullptr};
};
TORCH_MODULE(Upsample2D);

at::Tensor upsample_nearest_2x(const at::Tensor& x);

}  // namespace cm::models
