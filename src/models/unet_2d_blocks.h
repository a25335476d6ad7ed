// The down, mid and up blocks of UNet2DModel (diffusers.models.unets.unet_2d_blocks).
// One class per role: DownBlock2D, AttnDownBlock2D and ResnetDownsampleBlock2D differ only in
// whether they have attention and which downsampler they use, and so for the up blocks.
#pragma once

#include <optional>
#include <string>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <vector>

#include "models/attention.h"
#include "models/resnet.h"

namespace cm::models {

struct BlockOptions {
  std::string type;  // e.g. "AttnDownBlock2D"
  int64_t num_layers = 2;
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t prev_output_channels = 0;  // up blocks only
  int64_t temb_channels = 0;
  bool add_sample = true;  // add_downsample / add_upsample
  double eps = 1e-5;
  int64_t groups = 32;
  bool scale_shift = false;
  int64_t head_dim = 8;
  int64_t downsample_padding = 1;
  std::string sample_type = "conv";  // downsample_type / upsample_type
  double dropout = 0.0;
};

class DownBlockImpl : public torch::nn::Module {
 public:
  explicit DownBlockImpl(const BlockOptions& options);
  // Returns the hidden state; appends every skip output to `skips`.
  at::Tensor forward(at::Tensor h, const at::Tensor& temb, std::vector<at::Tensor>& skips);

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, downsamplers{nullptr};

 private:
  bool resnet_downsampler_ = false;
};
TORCH_MODULE(DownBlock);

class UpBlockImpl : public torch::nn::Module {
 public:
  explicit UpBlockImpl(const BlockOptions& options);
  // Consumes one skip per resnet from the back of `skips`.
  at::Tensor forward(at::Tensor h, const at::Tensor& temb, std::vector<at::Tensor>& skips);

  torch::nn::ModuleList resnets{nullptr}, attentions{nullptr}, upsamplers{nullptr};

 private:
  bool resnet_upsampler_ = false;
};
TORCH_MODULE(UpBlock);

// UNetMidBlock2D with one layer: resnet, (attention), resnet.
struct MidBlockOptions {
  int64_t channels = 0;
  int64_t temb_channels = 0;
  double eps = 1e-5;
  int64_t groups = 32;
  std::optional<int64_t> attn_groups;
  bool scale_shift = false;
  bool add_attention = true;
  int64_t head_dim = 8;
  double output_scale_factor = 1.0;
  double dropout = 0.0;
};

class MidBlockImpl : public torch::nn::Module {
 public:
  explicit MidBlockImpl(const MidBlockOptions& options);
  at::Tensor forward(at::Tensor h, const at::Tensor& temb);

  torch::nn::ModuleList attentions{nullptr}, resnets{nullptr};
};
TORCH_MODULE(MidBlock);

}  // namespace cm::models
