#include "models/resnet.h"

#include "kernels/norm_act.h"

namespace cm::models {
namespace {

Conv2d conv3x3(int64_t in, int64_t out, int64_t stride = 1, int64_t padding = 1) {
  return Conv2d(in, out, 3, stride, padding);
}

torch::nn::GroupNorm group_norm(int64_t groups, int64_t channels, double eps) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, channels).eps(eps).affine(true));
}

}  // namespace

at::Tensor upsample_nearest_2x(const at::Tensor& x) {
  // diffusers upsamples bfloat16 in float32; nearest is exact either way, so this only keeps the
  // kernel available on every LibTorch build.
  if (x.scalar_type() == at::kBFloat16) {
    return at::upsample_nearest2d(x.to(at::kFloat), {x.size(2) * 2, x.size(3) * 2})
        .to(at::kBFloat16);
  }
  return at::upsample_nearest2d(x, {x.size(2) * 2, x.size(3) * 2});
}

ResnetBlock2DImpl::ResnetBlock2DImpl(const ResnetOptions& o) : options_(o) {
  norm1 = register_module("norm1", group_norm(o.groups, o.in_channels, o.eps));
  conv1 = register_module("conv1", conv3x3(o.in_channels, o.out_channels));
  const int64_t proj = o.scale_shift ? 2 * o.out_channels : o.out_channels;
  time_emb_proj = register_module("time_emb_proj", Linear(o.temb_channels, proj));
  norm2 = register_module("norm2", group_norm(o.groups, o.out_channels, o.eps));
  dropout = register_module("dropout", torch::nn::Dropout(o.dropout));
  conv2 = register_module("conv2", conv3x3(o.out_channels, o.out_channels));
  if (o.in_channels != o.out_channels) {
    conv_shortcut =
        register_module("conv_shortcut", Conv2d(o.in_channels, o.out_channels, /*kernel=*/1));
  }
}

at::Tensor ResnetBlock2DImpl::forward(const at::Tensor& input, const at::Tensor& temb) {
  at::Tensor shortcut = input;
  // At inference on the CPU each norm → (time scale/shift) → SiLU chain is one fused kernel
  // (src/kernels/norm_act.h); with gradients, the plain ops.
  const int64_t groups = norm1->options.num_groups();
  at::Tensor h = kernels::group_norm_act_supported(input, groups)
                     ? kernels::group_norm_act(input, groups, norm1->weight, norm1->bias,
                                               norm1->options.eps(), /*silu=*/true)
                     : at::silu(apply_group_norm(*norm1, input));
  if (options_.up) {
    shortcut = upsample_nearest_2x(shortcut);
    h = upsample_nearest_2x(h);
  } else if (options_.down) {
    shortcut = at::avg_pool2d(shortcut, {2, 2}, {2, 2});
    h = at::avg_pool2d(h, {2, 2}, {2, 2});
  }
  h = conv1(h);
  const auto t = time_emb_proj(at::silu(temb));  // [B, C] or [B, 2C]
  const auto& n = norm2->options;
  if (kernels::group_norm_act_supported(h, n.num_groups())) {
    if (options_.scale_shift) {
      // (x̂·γ + β)·(1 + s) + t is group norm with the per-sample affine γ·(1 + s), β·(1 + s) + t,
      // formed in float32 (a few thousand values) so that bfloat16 rounds only the output.
      const auto parts = t.to(at::kFloat).chunk(2, 1);
      const auto scale = 1 + parts[0];
      h = kernels::group_norm_act(h, n.num_groups(), norm2->weight.to(at::kFloat) * scale,
                                  norm2->bias.to(at::kFloat) * scale + parts[1], n.eps(),
                                  /*silu=*/true);
    } else {
      h = kernels::group_norm_act(h, n.num_groups(), norm2->weight, norm2->bias, n.eps(),
                                  /*silu=*/true, /*offset=*/t);
    }
  } else {
    const auto t4 = t.unsqueeze(-1).unsqueeze(-1);
    if (options_.scale_shift) {
      const auto parts = t4.chunk(2, 1);
      h = apply_group_norm(*norm2, h) * (1 + parts[0]) + parts[1];
    } else {
      h = apply_group_norm(*norm2, h + t4);
    }
    h = at::silu(h);
  }
  h = conv2(dropout(h));
  if (conv_shortcut) shortcut = conv_shortcut(shortcut);
  auto out = shortcut + h;
  if (options_.output_scale_factor != 1.0) out = out / options_.output_scale_factor;
  return out;
}

Downsample2DImpl::Downsample2DImpl(int64_t channels, int64_t padding) : padding_(padding) {
  conv = register_module("conv", conv3x3(channels, channels, /*stride=*/2, padding));
}

at::Tensor Downsample2DImpl::forward(const at::Tensor& x) {
  // With padding 0 diffusers pads right and bottom only, keeping the output size at half.
  if (padding_ == 0) return conv(at::constant_pad_nd(x, {0, 1, 0, 1}, 0));
  return conv(x);
}

Upsample2DImpl::Upsample2DImpl(int64_t channels) {
  conv = register_module("conv", conv3x3(channels, channels));
}

at::Tensor Upsample2DImpl::forward(const at::Tensor& x) { return conv(upsample_nearest_2x(x)); }

}  // namespace cm::models
