// FLOPs of UNet2DModel, walking the same construction as the module tree does.
#include "cm/bench.h"

namespace cm {
namespace {

struct Counter {
  FlopCount f;
  int64_t temb = 0;
  bool scale_shift = false;

  void conv(int64_t in, int64_t out, int64_t k, int64_t res) { f.conv += 2.0 * in * out * k * k * res * res; }
  void linear(int64_t in, int64_t out, int64_t tokens = 1) { f.linear += 2.0 * in * out * tokens; }
  // A ResnetBlock2D whose convolutions run at `res` (after its own up/down sampling).
  void resnet(int64_t in, int64_t out, int64_t res) {
    conv(in, out, 3, res);
    conv(out, out, 3, res);
    if (in != out) conv(in, out, 1, res);
    linear(temb, scale_shift ? 2 * out : out);
  }
  void attention(int64_t c, int64_t res) {
    const int64_t tokens = res * res;
    linear(c, c, tokens * 4);  // q, k, v, out
    f.attention += 2.0 * 2.0 * static_cast<double>(tokens) * tokens * c;
  }
};

bool has_attention(const std::string& type) { return type.rfind("Attn", 0) == 0; }

}  // namespace

FlopCount count_unet_flops(const UNetConfig& c) {
  Counter k;
  const int64_t c0 = c.block_out_channels.front();
  k.temb = 4 * c0;
  k.scale_shift = c.resnet_time_scale_shift == "scale_shift";
  int64_t res = c.sample_size;
  const size_t levels = c.block_out_channels.size();
  k.conv(c.in_channels, c0, 3, res);
  const int64_t time_in = c.time_embedding_type == "fourier" ? 2 * c0 : c0;
  k.linear(time_in, k.temb);
  k.linear(k.temb, k.temb);
  if (c.class_embed_type == "timestep") {
    k.linear(time_in, k.temb);
    k.linear(k.temb, k.temb);
  }
  int64_t out = c0;
  for (size_t i = 0; i < levels; ++i) {
    int64_t in = out;
    out = c.block_out_channels[i];
    for (int l = 0; l < c.layers_per_block; ++l) {
      k.resnet(l == 0 ? in : out, out, res);
      if (has_attention(c.down_block_types[i])) k.attention(out, res);
    }
    if (i + 1 < levels) {
      const bool resnet_down = c.down_block_types[i] == "ResnetDownsampleBlock2D" ||
                               (c.down_block_types[i] == "AttnDownBlock2D" &&
                                c.downsample_type == "resnet");
      res /= 2;
      if (resnet_down) {
        k.resnet(out, out, res);
      } else {
        k.conv(out, out, 3, res);
      }
    }
  }
  const int64_t mid = c.block_out_channels.back();
  k.resnet(mid, mid, res);
  if (c.add_attention) k.attention(mid, res);
  k.resnet(mid, mid, res);
  std::vector<int64_t> rev(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  out = rev[0];
  for (size_t i = 0; i < levels; ++i) {
    const int64_t prev = out;
    out = rev[i];
    const int64_t in = rev[std::min(i + 1, levels - 1)];
    const int layers = c.layers_per_block + 1;
    for (int l = 0; l < layers; ++l) {
      const int64_t skip = l == layers - 1 ? in : out;
      k.resnet((l == 0 ? prev : out) + skip, out, res);
      if (has_attention(c.up_block_types[i])) k.attention(out, res);
    }
    if (i + 1 < levels) {
      const bool resnet_up = c.up_block_types[i] == "ResnetUpsampleBlock2D" ||
                             (c.up_block_types[i] == "AttnUpBlock2D" && c.upsample_type == "resnet");
      res *= 2;
      if (resnet_up) {
        k.resnet(out, out, res);
      } else {
        k.conv(out, out, 3, res);
      }
    }
  }
  k.conv(c0, c.out_channels, 3, res);
  return k.f;
}

}  // namespace cm
