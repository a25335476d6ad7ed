#include "models/unet_2d_blocks.h"

namespace cm::models {
namespace {

ResnetOptions resnet_options(const BlockOptions& o, int64_t in, int64_t out) {
  ResnetOptions r;
  r.in_channels = in;
  r.out_channels = out;
  r.temb_channels = o.temb_channels;
  r.groups = o.groups;
  r.eps = o.eps;
  r.scale_shift = o.scale_shift;
  r.dropout = o.dropout;
  return r;
}

Attention block_attention(const BlockOptions& o) {
  return Attention(o.out_channels, o.head_dim, o.eps, o.groups, /*rescale_output_factor=*/1.0);
}

bool has_attention(const std::string& type) { return type.rfind("Attn", 0) == 0; }

template <typename T>
T& at_index(torch::nn::ModuleListImpl& list, size_t i) {
  return *list[i]->as<T>();
}

}  // namespace

DownBlockImpl::DownBlockImpl(const BlockOptions& o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (has_attention(o.type)) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    resnets->push_back(ResnetBlock2D(resnet_options(o, i == 0 ? o.in_channels : o.out_channels,
                                                    o.out_channels)));
    if (attentions) attentions->push_back(block_attention(o));
  }
  if (!o.add_sample) return;
  // DownBlock2D always downsamples with a convolution, ResnetDownsampleBlock2D always with a
  // resnet; AttnDownBlock2D follows downsample_type.
  resnet_downsampler_ = o.type == "ResnetDownsampleBlock2D" ||
                        (o.type == "AttnDownBlock2D" && o.sample_type == "resnet");
  downsamplers = register_module("downsamplers", torch::nn::ModuleList());
  if (resnet_downsampler_) {
    auto r = resnet_options(o, o.out_channels, o.out_channels);
    r.down = true;
    downsamplers->push_back(ResnetBlock2D(r));
  } else {
    downsamplers->push_back(Downsample2D(o.out_channels, o.downsample_padding));
  }
}

at::Tensor DownBlockImpl::forward(at::Tensor h, const at::Tensor& temb,
                                  std::vector<at::Tensor>& skips) {
  for (size_t i = 0; i < resnets->size(); ++i) {
    h = at_index<ResnetBlock2DImpl>(*resnets, i).forward(h, temb);
    if (attentions) h = at_index<AttentionImpl>(*attentions, i).forward(h);
    skips.push_back(h);
  }
  if (downsamplers) {
    if (resnet_downsampler_) {
      h = at_index<ResnetBlock2DImpl>(*downsamplers, 0).forward(h, temb);
    } else {
      h = at_index<Downsample2DImpl>(*downsamplers, 0).forward(h);
    }
    skips.push_back(h);
  }
  return h;
}

UpBlockImpl::UpBlockImpl(const BlockOptions& o) {
  resnets = register_module("resnets", torch::nn::ModuleList());
  if (has_attention(o.type)) attentions = register_module("attentions", torch::nn::ModuleList());
  for (int64_t i = 0; i < o.num_layers; ++i) {
    const int64_t skip_channels = i == o.num_layers - 1 ? o.in_channels : o.out_channels;
    const int64_t resnet_in = i == 0 ? o.prev_output_channels : o.out_channels;
    resnets->push_back(ResnetBlock2D(resnet_options(o, resnet_in + skip_channels, o.out_channels)));
    if (attentions) attentions->push_back(block_attention(o));
  }
  if (!o.add_sample) return;
  resnet_upsampler_ = o.type == "ResnetUpsampleBlock2D" ||
                      (o.type == "AttnUpBlock2D" && o.sample_type == "resnet");
  upsamplers = register_module("upsamplers", torch::nn::ModuleList());
  if (resnet_upsampler_) {
    auto r = resnet_options(o, o.out_channels, o.out_channels);
    r.up = true;
    upsamplers->push_back(ResnetBlock2D(r));
  } else {
    upsamplers->push_back(Upsample2D(o.out_channels));
  }
}

at::Tensor UpBlockImpl::forward(at::Tensor h, const at::Tensor& temb,
                                std::vector<at::Tensor>& skips) {
  for (size_t i = 0; i < resnets->size(); ++i) {
    TORCH_CHECK(!skips.empty(), "UNet up block ran out of skip connections");
    h = at::cat({h, skips.back()}, 1);
    skips.pop_back();
    h = at_index<ResnetBlock2DImpl>(*resnets, i).forward(h, temb);
    if (attentions) h = at_index<AttentionImpl>(*attentions, i).forward(h);
  }
  if (upsamplers) {
    if (resnet_upsampler_) {
      h = at_index<ResnetBlock2DImpl>(*upsamplers, 0).forward(h, temb);
    } else {
      h = at_index<Upsample2DImpl>(*upsamplers, 0).forward(h);
    }
  }
  return h;
}

MidBlockImpl::MidBlockImpl(const MidBlockOptions& o) {
  ResnetOptions r;
  r.in_channels = r.out_channels = o.channels;
  r.temb_channels = o.temb_channels;
  r.groups = o.groups;
  r.eps = o.eps;
  r.scale_shift = o.scale_shift;
  r.output_scale_factor = o.output_scale_factor;
  r.dropout = o.dropout;
  resnets = register_module("resnets", torch::nn::ModuleList(ResnetBlock2D(r), ResnetBlock2D(r)));
  // diffusers gives the attention a group norm only when asked to, or in the "default" time
  // conditioning; scale_shift models without attn_norm_num_groups have none.
  std::optional<int64_t> groups = o.attn_groups;
  if (!groups && !o.scale_shift) groups = o.groups;
  if (o.add_attention) {
    attentions = register_module(
        "attentions", torch::nn::ModuleList(Attention(o.channels, o.head_dim, o.eps, groups,
                                                      o.output_scale_factor)));
  }
}

at::Tensor MidBlockImpl::forward(at::Tensor h, const at::Tensor& temb) {
  h = at_index<ResnetBlock2DImpl>(*resnets, 0).forward(h, temb);
  if (attentions) h = at_index<AttentionImpl>(*attentions, 0).forward(h);
  return at_index<ResnetBlock2DImpl>(*resnets, 1).forward(h, temb);
}

}  // namespace cm::models
