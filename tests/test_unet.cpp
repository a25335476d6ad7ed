// UNet2DModel against diffusers: every output and every recorded activation of every golden case.
#include <filesystem>

#include "cm/error.h"
#include "cm/unet.h"
#include "golden.h"
#include "io/state_dict.h"
#include "models/layers.h"

namespace cm::test {
namespace {

namespace fs = std::filesystem;

TEST(UNetGolden, OutputsAndActivationsMatchDiffusers) {
  for (const auto& name : golden_names()) {
    const Golden& g = golden(name);
    auto unet = load_unet((fs::path(g.model_dir) / "unet").string());
    torch::InferenceMode guard;
    ASSERT_FALSE(g.cases["unet"].empty()) << name;
    for (const auto& c : g.cases["unet"]) {
      const std::string prefix = c["prefix"];
      SCOPED_TRACE(name + " " + prefix);
      std::optional<at::Tensor> labels;
      if (g.tensors.count(prefix + "class_labels")) labels = g.tensor(prefix + "class_labels");
      std::map<std::string, at::Tensor> acts;
      const auto out = unet->forward(g.tensor(prefix + "sample"), g.tensor(prefix + "timestep"),
                                     labels, [&](const std::string& n, const at::Tensor& t) {
                                       acts[n] = t.clone();
                                     });
      EXPECT_TRUE(close_scaled(out, g.tensor(prefix + "out"))) << "output";
      ASSERT_FALSE(c["activations"].empty());
      for (const std::string act : c["activations"]) {
        ASSERT_TRUE(acts.count(act)) << "activation " << act << " was not recorded";
        EXPECT_TRUE(close_scaled(acts[act], g.tensor(prefix + "act." + act))) << act;
      }
    }
  }
}

// Parameter names must be diffusers' own: the golden checkpoint loads with nothing left over, and
// what we save has exactly the same keys and values.
TEST(UNetGolden, SaveRoundTripKeepsDiffusersNames) {
  const Golden& g = golden(golden_names().front());
  const std::string unet_dir = (fs::path(g.model_dir) / "unet").string();
  auto unet = load_unet(unet_dir);
  const auto original = read_state_dict(unet_dir + "/diffusion_pytorch_model.safetensors");
  const fs::path out = fs::temp_directory_path() / "cm_test_save_unet";
  fs::remove_all(out);
  save_unet(unet, out.string());
  const auto saved = read_state_dict((out / "diffusion_pytorch_model.safetensors").string());
  ASSERT_EQ(saved.size(), original.size());
  for (const auto& [key, value] : original) {
    ASSERT_TRUE(saved.count(key)) << key;
    EXPECT_TRUE(at::equal(saved.at(key), value)) << key;
  }
  auto reloaded = load_unet(out.string());
  EXPECT_EQ(reloaded->config().to_json(), unet->config().to_json());
  fs::remove_all(out);
}

TEST(UNetErrors, MissingAndMisShapedWeightsAreListedTogether) {
  const Golden& g = golden(golden_names().front());
  const std::string unet_dir = (fs::path(g.model_dir) / "unet").string();
  auto state = read_state_dict(unet_dir + "/diffusion_pytorch_model.safetensors");
  state.erase("conv_in.bias");
  state["conv_out.weight"] = at::zeros({1, 2, 3});
  state["extra.weight"] = at::zeros({1});
  UNet2DModel unet(UNetConfig::load(unet_dir + "/config.json"));
  try {
    unet->load_state_dict(state, "ckpt.safetensors");
    FAIL() << "expected cm::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("ckpt.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find("missing [conv_in.bias]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("conv_out.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("unexpected [extra.weight]"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line";
  }
}

TEST(UNetErrors, UnknownBlockTypeNamesKeyAndValue) {
  try {
    UNetConfig::from_json(R"({"down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                              "up_block_types": ["UpBlock2D", "UpBlock2D"],
                              "block_out_channels": [32, 64]})",
                          "unet/config.json");
    FAIL() << "expected cm::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("unet/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find("down_block_types"), std::string::npos) << msg;
    EXPECT_NE(msg.find("CrossAttnDownBlock2D"), std::string::npos) << msg;
  }
}

// Architectures the golden models don't cover still build, run and keep their output shape:
// DownBlock2D/UpBlock2D with conv resampling, fourier time, timestep/identity class embeddings.
TEST(UNetVariants, OtherSupportedArchitecturesRun) {
  torch::InferenceMode guard;
  UNetConfig c;
  c.sample_size = 16;
  c.block_out_channels = {32, 64};
  c.down_block_types = {"DownBlock2D", "AttnDownBlock2D"};
  c.up_block_types = {"AttnUpBlock2D", "UpBlock2D"};
  c.attention_head_dim = 16;
  c.layers_per_block = 1;
  for (const char* time : {"positional", "fourier"}) {
    for (const char* cls : {"", "timestep", "identity"}) {
      if (std::string(time) == "fourier" && std::string(cls) == "timestep") continue;
      SCOPED_TRACE(std::string(time) + "/" + cls);
      c.time_embedding_type = time;
      c.class_embed_type = *cls ? std::optional<std::string>(cls) : std::nullopt;
      UNet2DModel unet(c);
      std::optional<at::Tensor> labels;
      if (std::string(cls) == "timestep") labels = at::tensor({3.0, 5.0});
      if (std::string(cls) == "identity") labels = at::randn({2, 128});
      const auto out = unet->forward(at::randn({2, 3, 16, 16}), at::tensor({0.5, 2.0}), labels);
      EXPECT_EQ(out.sizes(), (at::IntArrayRef{2, 3, 16, 16}));
      EXPECT_TRUE(out.isfinite().all().item<bool>());
    }
  }
}

// load_unet copies each tensor once from the mapped file into storage of the final dtype and
// layout: nothing may be lost or reordered on the way.
TEST(UNetLoad, WeightsEqualTheFileBitForBitInChannelsLast) {
  const Golden& g = golden(golden_names().front());
  const std::string unet_dir = (fs::path(g.model_dir) / "unet").string();
  const auto file = read_state_dict(unet_dir + "/diffusion_pytorch_model.safetensors");
  for (const auto dtype : {at::kFloat, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    auto unet = load_unet(unet_dir, dtype, at::kCPU, "", at::MemoryFormat::ChannelsLast);
    const auto state = unet->state_dict();
    ASSERT_EQ(state.size(), file.size());
    for (const auto& [key, value] : state) {
      ASSERT_TRUE(file.count(key)) << key;
      EXPECT_EQ(value.scalar_type(), dtype) << key;
      EXPECT_TRUE(at::equal(value, file.at(key).to(dtype))) << key;
      if (value.dim() == 4)
        EXPECT_TRUE(value.is_contiguous(at::MemoryFormat::ChannelsLast)) << key;
    }
  }
}

// The model's own Conv2d and Linear stand in for torch::nn's: same draws for the same seed, same
// outputs; and skipping the initialisation draws nothing at all.
TEST(UNetLoad, LayersInitialiseAndRunAsTorchNn) {
  torch::NoGradGuard no_grad;
  torch::manual_seed(7);
  torch::nn::Conv2d ref_conv(torch::nn::Conv2dOptions(5, 6, 3).stride(2).padding(1));
  torch::nn::Linear ref_linear(7, 3);
  torch::manual_seed(7);
  models::Conv2d conv(5, 6, 3, /*stride=*/2, /*padding=*/1);
  models::Linear linear(7, 3);
  EXPECT_TRUE(at::equal(conv->weight, ref_conv->weight));
  EXPECT_TRUE(at::equal(conv->bias, ref_conv->bias));
  EXPECT_TRUE(at::equal(linear->weight, ref_linear->weight));
  EXPECT_TRUE(at::equal(linear->bias, ref_linear->bias));
  const auto x = at::randn({2, 5, 9, 9});
  EXPECT_TRUE(at::equal(conv(x), ref_conv(x)));
  const auto v = at::randn({4, 7});
  EXPECT_TRUE(at::equal(linear(v), ref_linear(v)));

  torch::manual_seed(3);
  const auto expected = at::randn({4});
  torch::manual_seed(3);
  {
    models::SkipInitGuard skip;
    models::Conv2d unused(5, 6, 3);
  }
  EXPECT_TRUE(at::equal(at::randn({4}), expected));
}

}  // namespace
}  // namespace cm::test
