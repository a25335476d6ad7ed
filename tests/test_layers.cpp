// Conv2d's prepacked inference path (oneDNN called directly on a weight reordered once) against
// the plain convolution, and the promise that the weights themselves never change; the threaded,
// blocked and fused inference paths against the plain ones.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "cm/unet.h"
#include "models/attention.h"
#include "models/layers.h"
#include "models/resnet.h"
#if CM_ONEDNN_DIRECT
#include "kernels/onednn_conv.h"
#endif

namespace cm::test {
namespace {

using models::Conv2d;

// Builds against LibTorch 2.x use LibTorch's own convolution (CMakeLists.txt: CM_ONEDNN_DIRECT).
#if CM_ONEDNN_DIRECT
#define SKIP_WITHOUT_ONEDNN_DIRECT()
#else
#define SKIP_WITHOUT_ONEDNN_DIRECT() \
  GTEST_SKIP() << "built without the direct oneDNN convolutions (LibTorch 2.x)"
#endif

struct ConvCase {
  int64_t in, out, kernel, stride, padding, side;
};

// Packed (oneDNN called directly, src/kernels/onednn_conv.h) against at::conv2d with the
// original weight: 3×3, strided 3×3 (the downsamplers, also with diffusers' padding 0) and 1×1;
// NHWC and NCHW inputs; float32 and bfloat16.
TEST(Conv2dPrepack, MatchesThePlainConvolutionAndKeepsTheWeights) {
  SKIP_WITHOUT_ONEDNN_DIRECT();
  const std::vector<ConvCase> cases = {
      {64, 48, 3, 1, 1, 9}, {32, 32, 3, 2, 1, 8}, {32, 32, 3, 2, 0, 9}, {40, 24, 1, 1, 0, 7}};
  for (auto type : {at::kFloat, at::kBFloat16}) {
    for (const bool nhwc : {true, false}) {
      for (const auto& k : cases) {
        SCOPED_TRACE(std::string(c10::toString(type)) + (nhwc ? " NHWC " : " NCHW ") +
                     std::to_string(k.kernel) + "x" + std::to_string(k.kernel) + " stride " +
                     std::to_string(k.stride) + " padding " + std::to_string(k.padding));
        torch::manual_seed(0);
        Conv2d conv(k.in, k.out, k.kernel, k.stride, k.padding);
        conv->to(type);
        if (nhwc) conv->weight.set_data(conv->weight.contiguous(at::MemoryFormat::ChannelsLast));
        const auto original = conv->weight.detach().clone();
        auto x = at::randn({2, k.in, k.side, k.side}).to(type);
        if (nhwc) x = x.contiguous(at::MemoryFormat::ChannelsLast);
        at::Tensor plain, packed;
        {
          torch::NoGradGuard no_grad;
          plain = at::conv2d(x, original, conv->bias, k.stride, k.padding);
          EXPECT_TRUE(at::equal(conv->forward(x), plain));  // not allowed yet: the plain op
          EXPECT_FALSE(conv->is_prepacked());
          conv->allow_prepack(true);
          packed = conv->forward(x);
        }
        // oneDNN 2.x has bfloat16 convolutions from AVX-512 on only: elsewhere the layer keeps
        // LibTorch's convolution (which then emulates bfloat16).
        if (type == at::kBFloat16 && !__builtin_cpu_supports("avx512bw")) {
          EXPECT_FALSE(conv->is_prepacked());
          EXPECT_TRUE(at::equal(packed, plain));
          continue;
        }
        ASSERT_TRUE(conv->is_prepacked());
        EXPECT_EQ(packed.sizes(), plain.sizes());
        EXPECT_EQ(packed.is_contiguous(at::MemoryFormat::ChannelsLast), nhwc);
        // The same oneDNN kernels: float32 agrees to rounding; bfloat16 outputs to a step.
        const double tol = type == at::kFloat ? 1e-5 : 2e-2;
        EXPECT_TRUE(at::allclose(packed.to(at::kFloat), plain.to(at::kFloat), tol, tol))
            << (packed.to(at::kFloat) - plain.to(at::kFloat)).abs().max().item<double>();
        EXPECT_TRUE(at::equal(conv->dense_weight(), original));
        // While packed the weight is no parameter and reads as nothing (issue 15 g: it was a
        // parameter of zeros).
        EXPECT_EQ(conv->named_parameters().size(), 1u);
        EXPECT_TRUE(conv->named_parameters().contains("bias"));
        EXPECT_EQ(conv->weight.numel(), 0);
        // A forward with gradients (training) restores the plain weight, bit for bit.
        const auto y = conv->forward(x);
        EXPECT_FALSE(conv->is_prepacked());
        EXPECT_TRUE(y.requires_grad());
        EXPECT_TRUE(at::equal(conv->weight, original));
      }
    }
  }
}

// One packed layer meets other image sizes and the other layout (a primitive each, the weight
// reordered again only if a kernel wants another layout), and an input it cannot take as is.
TEST(Conv2dPrepack, OtherShapesAndLayoutsKeepWorking) {
  SKIP_WITHOUT_ONEDNN_DIRECT();
  torch::manual_seed(5);
  Conv2d conv(32, 32, 3, 1, 1);
  conv->weight.set_data(conv->weight.contiguous(at::MemoryFormat::ChannelsLast));
  const auto original = conv->weight.detach().clone();
  conv->allow_prepack(true);
  torch::NoGradGuard no_grad;
  const auto first = at::randn({1, 32, 16, 16}).contiguous(at::MemoryFormat::ChannelsLast);
  conv->forward(first);
  ASSERT_TRUE(conv->is_prepacked());
  const std::vector<at::Tensor> inputs = {
      at::randn({3, 32, 5, 7}).contiguous(at::MemoryFormat::ChannelsLast),
      at::randn({1, 32, 16, 16}), at::randn({1, 32, 12, 12}).transpose(2, 3), first};
  for (const auto& x : inputs) {
    const auto plain = at::conv2d(x, original, conv->bias, 1, 1);
    const auto y = conv->forward(x);
    EXPECT_TRUE(at::allclose(y, plain, 1e-5, 1e-5)) << (y - plain).abs().max().item<double>();
  }
  EXPECT_TRUE(at::equal(conv->dense_weight(), original));
}

TEST(Conv2dPrepack, OtherDtypesStayPlain) {
  Conv2d conv(8, 8, 3, 1, 1);
  conv->to(at::kDouble);
  conv->allow_prepack(true);
  torch::NoGradGuard no_grad;
  const auto x = at::randn({1, 8, 6, 6}, at::kDouble);
  EXPECT_TRUE(at::equal(conv->forward(x), at::conv2d(x, conv->weight, conv->bias, 1, 1)));
  EXPECT_FALSE(conv->is_prepacked());
}

// Two blocks, one with attention: every kind of convolution the published models have.
UNetConfig small_unet_config(int sample_size) {
  UNetConfig c;
  c.sample_size = sample_size;
  c.in_channels = c.out_channels = 3;
  c.block_out_channels = {32, 64};
  c.down_block_types = {"DownBlock2D", "AttnDownBlock2D"};
  c.up_block_types = {"AttnUpBlock2D", "UpBlock2D"};
  c.layers_per_block = 1;
  c.attention_head_dim = 8;
  c.norm_num_groups = 8;
  return c;
}

TEST(Conv2dPrepack, UNetStateDictIsUnchangedByPacking) {
  SKIP_WITHOUT_ONEDNN_DIRECT();
  const UNetConfig c = small_unet_config(8);
  torch::manual_seed(1);
  UNet2DModel unet(c);
  unet->eval();
  const auto before = unet->state_dict();
  std::map<std::string, at::Tensor> copy;
  for (const auto& [k, v] : before) copy.emplace(k, v.clone());
  unet->to_channels_last();
  std::map<std::string, const c10::TensorImpl*> handles;
  for (const auto& p : unet->named_parameters(true)) handles.emplace(p.key(), p.value().unsafeGetTensorImpl());
  unet->allow_weight_prepacking(true);
  const auto x = at::randn({1, 3, 8, 8}).contiguous(at::MemoryFormat::ChannelsLast);
  const auto t = at::full({1}, 10.0);
  at::Tensor packed;
  {
    torch::NoGradGuard no_grad;
    packed = unet->forward(x, t);
  }
  int n_packed = 0;
  for (const auto& m : unet->modules(false))
    if (auto* conv = dynamic_cast<models::Conv2dImpl*>(m.get())) n_packed += conv->is_prepacked();
  EXPECT_GT(n_packed, 0);
  const auto after = unet->state_dict();
  ASSERT_EQ(after.size(), copy.size());
  for (const auto& [k, v] : copy) EXPECT_TRUE(at::equal(after.at(k), v)) << k;
  // What torch::nn itself hands out (an optimizer, torch::save, a user's own loop) holds only
  // real values: packed weights once stayed there as zeros (issue 15 g); now they are left out.
  const auto packed_params = unet->named_parameters(/*recurse=*/true);
  EXPECT_EQ(packed_params.size() + n_packed, handles.size());
  for (const auto& p : packed_params) {
    EXPECT_TRUE(at::equal(p.value(), copy.at(p.key()))) << p.key();
  }
  // Unpacking brings back the same tensors (an optimizer holding them keeps working), unchanged.
  unet->unpack_weights();
  const auto restored = unet->named_parameters(/*recurse=*/true);
  ASSERT_EQ(restored.size(), handles.size());
  for (const auto& p : restored) {
    EXPECT_EQ(p.value().unsafeGetTensorImpl(), handles.at(p.key())) << p.key();
    EXPECT_TRUE(at::equal(p.value(), copy.at(p.key()))) << p.key();
  }
  unet->allow_weight_prepacking(false);
  torch::NoGradGuard no_grad;
  const auto plain = unet->forward(x, t);
  EXPECT_TRUE(at::allclose(packed, plain, 1e-4, 1e-5));
}

// A UNet ready for CPU inference as the pipeline makes it (NHWC, packing allowed), its weights
// drawn from `seed`.
UNet2DModel packable_unet(const UNetConfig& c, uint64_t seed) {
  torch::manual_seed(seed);
  UNet2DModel unet(c);
  unet->eval();
  unet->to_channels_last();
  unet->allow_weight_prepacking(true);
  return unet;
}

// prepack_weights() packs every convolution at load, from one forward of an empty batch; the calls
// after it must give what packing in the first call gives, bit for bit, at the batch it packed
// for and at others, and the weights must stay what they were.
TEST(Conv2dPrepack, PrepackWeightsPacksEveryConvolutionAtLoad) {
  SKIP_WITHOUT_ONEDNN_DIRECT();
  UNetConfig c = small_unet_config(16);
  c.num_class_embeds = 10;
  auto at_load = packable_unet(c, 2);
  auto lazy = packable_unet(c, 2);
  const auto weights = lazy->state_dict();
  EXPECT_FALSE(lazy->prepack_weights(0));
  ASSERT_TRUE(at_load->prepack_weights(1));
  int convs = 0, packed = 0;
  for (const auto& m : at_load->modules(false)) {
    if (auto* conv = dynamic_cast<models::Conv2dImpl*>(m.get())) {
      ++convs;
      packed += conv->is_prepacked();
    }
  }
  EXPECT_GT(convs, 10);
  EXPECT_EQ(packed, convs);
  for (const auto& [k, v] : at_load->state_dict()) EXPECT_TRUE(at::equal(v, weights.at(k))) << k;
  torch::NoGradGuard no_grad;
  for (int64_t batch : {1, 3}) {
    const auto x = at::randn({batch, 3, 16, 16});
    const auto t = at::full({batch}, 10.0);
    const auto labels = at::arange(batch, at::kLong);
    EXPECT_TRUE(at::equal(at_load->forward(x, t, labels), lazy->forward(x, t, labels))) << batch;
  }
  // Not allowed to pack: nothing happens.
  torch::manual_seed(2);
  UNet2DModel plain(c);
  EXPECT_FALSE(plain->prepack_weights(1));
}

// oneDNN's default scratchpad belongs to the thread that made the primitive and dies with it:
// `cm serve` loads (and so packs) on a thread that ends, then runs on its engine thread, and
// crashed there until each call passed its own scratchpad (the server tests caught it; this
// small model did not crash without the fix). A model packed on a thread that ended must run
// elsewhere and give the numbers of one packed where it runs.
TEST(Conv2dPrepack, PackedOnAThreadThatEndedRunsOnAnother) {
  SKIP_WITHOUT_ONEDNN_DIRECT();
  // The shipped model's architecture (its 1-channel input convolution has a scratchpad).
  UNetConfig c;
  c.sample_size = 28;
  c.in_channels = c.out_channels = 1;
  c.block_out_channels = {32, 64, 64};
  c.down_block_types = {"ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "AttnDownBlock2D"};
  c.up_block_types = {"AttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"};
  c.downsample_type = c.upsample_type = "resnet";
  c.layers_per_block = 1;
  c.attention_head_dim = 32;
  c.norm_num_groups = c.attn_norm_num_groups = 8;
  c.resnet_time_scale_shift = "scale_shift";
  c.num_class_embeds = 10;
  auto elsewhere = packable_unet(c, 4);
  auto here = packable_unet(c, 4);
  bool packed = false;
  std::thread([&] { packed = elsewhere->prepack_weights(2); }).join();
  ASSERT_TRUE(packed);
  torch::NoGradGuard no_grad;
  for (int round = 0; round < 2; ++round) {
    const auto x = at::randn({2, 1, 28, 28});
    const auto t = at::full({2}, 10.0);
    const auto labels = at::arange(2, at::kLong);
    EXPECT_TRUE(at::equal(elsewhere->forward(x, t, labels), here->forward(x, t, labels)));
  }
}

// Winograd (opt-in, LoadOptions::winograd) computes a 3×3 convolution from transformed tiles:
// not the direct convolution's rounding, and the bound it must keep is 1e-5 of the output's
// largest magnitude (measured 0.3–2e-6 on ImageNet-64's layer shapes). Where this CPU has no
// Winograd kernel it must stay the direct convolution, bit for bit. Strided, 1×1 and bfloat16
// convolutions stay direct everywhere, and so does oneDNN's F(4×4) kernel on few tiles.
#if CM_ONEDNN_DIRECT
bool is_winograd(const std::string& kernel) {
  return kernel.find("wino") != std::string::npos;
}
#endif

TEST(Conv2dPrepack, EachThreadCountGetsItsOwnPrimitive) {
  SKIP_WITHOUT_ONEDNN_DIRECT();
#if CM_ONEDNN_DIRECT
  // Adaptive threads narrow a call's team beside a busy process; a primitive made for the wider
  // team would still ask OpenMP for all of it.
  const int before = at::get_num_threads();
  torch::manual_seed(5);
  const auto weight = at::randn({32, 16, 3, 3}) / 12.0;
  const auto bias = at::randn({32});
  const auto x = at::randn({2, 16, 12, 12});
  at::set_num_threads(2);
  kernels::PackedConv2d conv(weight, 1, 1, x, bias);
  const auto two = conv.forward(x, bias);
  EXPECT_EQ(conv.primitive_count(), 1u);
  at::set_num_threads(1);
  const auto one = conv.forward(x, bias);
  EXPECT_EQ(conv.primitive_count(), 2u);
  at::set_num_threads(2);
  conv.forward(x, bias);
  EXPECT_EQ(conv.primitive_count(), 2u);  // made once per count, then found
  // The work is split differently, the sums are the same.
  EXPECT_TRUE(at::equal(one, two));
  EXPECT_LT((two - at::conv2d(x, weight, bias, 1, 1)).abs().max().item<float>(), 1e-5);
  at::set_num_threads(before);
#endif
}

TEST(Conv2dWinograd, StaysWithinItsBoundOfTheDirectConvolution) {
  SKIP_WITHOUT_ONEDNN_DIRECT();
#if CM_ONEDNN_DIRECT
  const bool available = kernels::winograd_available();
  struct Case {
    int64_t in, out, side, batch;
  };
  const auto cl = at::MemoryFormat::ChannelsLast;
  // 4×4 tiles: 32, 196, 32, 64.
  for (const Case& k :
       std::vector<Case>{{64, 64, 16, 2}, {32, 48, 28, 4}, {128, 128, 8, 8}, {192, 192, 32, 1}}) {
    for (const bool nhwc : {true, false}) {
      SCOPED_TRACE(std::to_string(k.in) + "->" + std::to_string(k.out) + " at " +
                   std::to_string(k.side) + ", batch " + std::to_string(k.batch) +
                   (nhwc ? " NHWC" : " NCHW"));
      torch::manual_seed(3);
      auto weight = at::randn({k.out, k.in, 3, 3}) / std::sqrt(9.0 * k.in);
      const auto bias = at::randn({k.out});
      auto x = at::randn({k.batch, k.in, k.side, k.side});
      if (nhwc) {
        weight = weight.contiguous(cl);
        x = x.contiguous(cl);
      }
      kernels::PackedConv2d direct(weight, 1, 1, x, bias), winograd(weight, 1, 1, x, bias, true);
      EXPECT_FALSE(is_winograd(direct.kernel_name(x, bias)));
      EXPECT_EQ(is_winograd(winograd.kernel_name(x, bias)), available)
          << winograd.kernel_name(x, bias);
      const auto yd = direct.forward(x, bias), yw = winograd.forward(x, bias);
      EXPECT_EQ(yw.sizes(), yd.sizes());
      EXPECT_EQ(yw.is_contiguous(cl), nhwc);
      const double scale = yd.abs().max().item<double>();
      const double err = (yw - yd).abs().max().item<double>();
      if (available) {
        EXPECT_GT(err, 0.0);  // another algorithm really ran
        EXPECT_LE(err, 1e-5 * scale) << "scale " << scale;
      } else {
        EXPECT_TRUE(at::equal(yw, yd));
      }
      EXPECT_TRUE(at::equal(winograd.dense(nhwc ? cl : at::MemoryFormat::Contiguous), weight));
    }
  }
  torch::manual_seed(4);
  const auto x = at::randn({1, 32, 16, 16}), b = at::randn({32});
  EXPECT_FALSE(is_winograd(
      kernels::PackedConv2d(at::randn({32, 32, 3, 3}), 2, 1, x, b, true).kernel_name(x, b)));
  EXPECT_FALSE(is_winograd(
      kernels::PackedConv2d(at::randn({32, 32, 1, 1}), 1, 0, x, b, true).kernel_name(x, b)));
  if (__builtin_cpu_supports("avx512bw")) {  // oneDNN's bfloat16 convolutions
    const auto xb = x.to(at::kBFloat16), bb = b.to(at::kBFloat16);
    const auto wb = at::randn({32, 32, 3, 3}).to(at::kBFloat16);
    EXPECT_FALSE(is_winograd(kernels::PackedConv2d(wb, 1, 1, xb, bb, true).kernel_name(xb, bb)));
  }
  // One Winograd copy of the weight, whatever the batch (oneDNN's own layout choice varies with
  // it: for this layer at batch 1 it differs from batch 8's), each batch within the bound.
  {
    const auto w = at::randn({384, 384, 3, 3}) / 60.0, bias = at::randn({384});
    const auto first = at::randn({8, 384, 32, 32});
    kernels::PackedConv2d direct(w, 1, 1, first, bias), winograd(w, 1, 1, first, bias, true);
    const size_t one_copy = winograd.weight_bytes();
    if (available) EXPECT_GT(one_copy, direct.weight_bytes() * 4);
    for (const int64_t n : {1, 2, 4, 16, 8}) {
      const auto xn = at::randn({n, 384, 32, 32});
      const auto yd = direct.forward(xn, bias), yw = winograd.forward(xn, bias);
      EXPECT_LE((yw - yd).abs().max().item<double>(), 1e-5 * yd.abs().max().item<double>()) << n;
    }
    EXPECT_EQ(winograd.weight_bytes(), one_copy);
  }
  // 16 tiles of 4×4 (ImageNet-64's 16×16 layers at batch 1): never the F(4×4) kernel.
  const auto wide = at::randn({1, 576, 16, 16}), wide_bias = at::randn({576});
  const auto name =
      kernels::PackedConv2d(at::randn({576, 576, 3, 3}) / 72.0, 1, 1, wide, wide_bias, true)
          .kernel_name(wide, wide_bias);
  EXPECT_EQ(name.find("wino_4x3"), std::string::npos) << name;
#endif
}

// The layer and the UNet switch: set_winograd repacks, the weights stay bit for bit, and a whole
// UNet's output keeps within 1e-4 of its largest magnitude (about ten 3×3 layers deep).
TEST(Conv2dWinograd, LayerAndUNetSwitch) {
  SKIP_WITHOUT_ONEDNN_DIRECT();
#if CM_ONEDNN_DIRECT
  const bool available = kernels::winograd_available();
  torch::manual_seed(6);
  Conv2d conv(64, 64, 3, 1, 1);
  const auto original = conv->weight.detach().clone();
  const auto x = at::randn({2, 64, 16, 16}).contiguous(at::MemoryFormat::ChannelsLast);
  torch::NoGradGuard no_grad;
  const auto plain = at::conv2d(x, original, conv->bias, 1, 1);
  conv->allow_prepack(true);
  conv->set_winograd(true);
  const auto y = conv->forward(x);
  ASSERT_TRUE(conv->is_prepacked());
  const double err = (y - plain).abs().max().item<double>();
  EXPECT_LE(err, 1e-5 * plain.abs().max().item<double>());
  if (available) EXPECT_GT(err, 0.0);
  EXPECT_TRUE(at::equal(conv->dense_weight(), original));
  conv->set_winograd(false);  // unpacks; the next call packs the direct way
  EXPECT_FALSE(conv->is_prepacked());
  EXPECT_TRUE(at::allclose(conv->forward(x), plain, 1e-5, 1e-5));

  const UNetConfig c = small_unet_config(16);
  torch::manual_seed(7);
  UNet2DModel unet(c);
  unet->eval();
  unet->to_channels_last();
  unet->allow_weight_prepacking(true);
  const auto sample = at::randn({2, 3, 16, 16}).contiguous(at::MemoryFormat::ChannelsLast);
  const auto t = at::full({2}, 10.0);
  const auto direct = unet->forward(sample, t);
  unet->use_winograd(true);
  const auto winograd = unet->forward(sample, t);
  const double unet_err = (winograd - direct).abs().max().item<double>();
  EXPECT_LE(unet_err, 1e-4 * direct.abs().max().item<double>());
  if (available) EXPECT_GT(unet_err, 0.0);
  unet->use_winograd(false);
  EXPECT_TRUE(at::equal(unet->forward(sample, t), direct));
#endif
}

// Without gradients, Linear shares its rows and Attention its heads out over the threads; with
// gradients both take the plain batched path. Both must give the same numbers.
TEST(ThreadedInference, LinearRowsMatchThePlainGemm) {
  at::set_num_threads(2);
  torch::manual_seed(2);
  models::Linear lin(48, 40);
  const auto contiguous = at::randn({2, 300, 48});
  const auto transposed = at::randn({1, 48, 300}).transpose(1, 2);  // as the attention blocks pass it
  for (const auto& x : {contiguous, transposed}) {
    const auto reference = at::linear(x, lin->weight, lin->bias).detach();
    torch::NoGradGuard no_grad;
    const auto y = lin->forward(x);
    EXPECT_EQ(y.sizes(), reference.sizes());
    EXPECT_TRUE(at::allclose(y, reference, 1e-6, 1e-6))
        << (y - reference).abs().max().item<double>();
  }
}

// Without gradients the attention runs in blocks of query rows (src/models/attention.cpp); 20×20
// tokens make three blocks, the last one short. bfloat16 keeps its own tolerance: the two paths
// round the scores in different GEMMs and take exp differently before one rounding to 8 bits.
TEST(ThreadedInference, AttentionBlocksMatchTheBatchedPath) {
  at::set_num_threads(2);
  for (const int64_t side : {12, 20}) {
    for (const auto dtype : {at::kFloat, at::kBFloat16}) {
      SCOPED_TRACE(std::to_string(side) + " " + c10::toString(dtype));
      torch::manual_seed(3);
      models::Attention attn(64, 16, 1e-5, 8, 1.0);  // 4 heads
      attn->to(dtype);
      const auto x =
          at::randn({2, 64, side, side}).to(dtype).contiguous(at::MemoryFormat::ChannelsLast);
      const auto batched = attn->forward(x).detach();  // gradients on: the batched path
      torch::NoGradGuard no_grad;
      const auto blocked = attn->forward(x);
      const double tol = dtype == at::kFloat ? 1e-5 : 3e-2;
      EXPECT_TRUE(at::allclose(blocked.to(at::kFloat), batched.to(at::kFloat), tol, tol))
          << (blocked.to(at::kFloat) - batched.to(at::kFloat)).abs().max().item<double>();
    }
  }
}

// At inference the ResNet block's norm → time scale/shift (or offset) → SiLU chains are fused
// kernels (src/kernels/norm_act.h), with the scale/shift folded into a per-sample affine; with
// gradients, the plain ops. Same numbers to rounding, for a batch of two.
TEST(ThreadedInference, FusedResnetNormsMatchThePlainPath) {
  for (const bool scale_shift : {true, false}) {
    SCOPED_TRACE(scale_shift ? "scale_shift" : "default");
    torch::manual_seed(4);
    models::ResnetOptions o;
    o.in_channels = 32;
    o.out_channels = 48;
    o.temb_channels = 16;
    o.groups = 8;
    o.scale_shift = scale_shift;
    models::ResnetBlock2D block(o);
    block->eval();
    // Non-trivial norm affines, so that the fold has γ and β to combine.
    for (auto* norm : {&block->norm1, &block->norm2}) {
      (*norm)->weight.data().uniform_(0.5, 1.5);
      (*norm)->bias.data().uniform_(-0.5, 0.5);
    }
    const auto x = at::randn({2, 32, 8, 8}).contiguous(at::MemoryFormat::ChannelsLast);
    const auto temb = at::randn({2, 16});
    const auto plain = block->forward(x, temb).detach();  // gradients on: the plain path
    torch::NoGradGuard no_grad;
    const auto fused = block->forward(x, temb);
    EXPECT_TRUE(at::allclose(fused, plain, 1e-5, 1e-6))
        << (fused - plain).abs().max().item<double>();
  }
}

}  // namespace
}  // namespace cm::test
