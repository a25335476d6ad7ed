// The original-repository converter without LibTorch: the architecture it reads from the golden
// checkpoints against the config diffusers' conversion used, and its errors. (test_convert runs
// the converted folders through cm generate.)
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cm/config.h"
#include "cm/convert.h"
#include "cm/error.h"
#include "cm/safetensors.h"
#include "temp_dir_test.h"

namespace cm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const std::string kOriginal = CM_GOLDEN_DIR "/original/";

class ConvertOriginal : public test::TempDirTest {};

json read_json(const std::string& path) {
  return json::parse(read_text_file(path));
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    return m;
  }
  return "";
}

ConvertOptions sized(int image_size) {
  ConvertOptions o;
  o.image_size = image_size;
  return o;
}

TEST_F(ConvertOriginal, WrittenConfigIsDiffusersOnEveryKey) {
  for (const std::string name : {"imagenet_like", "bedroom_like"}) {
    const json cases = read_json(kOriginal + name + "/cases.json");
    const std::string out = path(name);
    const json& want = cases["diffusers_unet_config"];
    convert_original_checkpoint(kOriginal + name + "/model.pt", out, sized(want["sample_size"]));
    const json got = read_json(out + "/unet/config.json");
    for (const auto& [key, value] : want.items()) EXPECT_EQ(got[key], value) << name << ": " << key;
    // The keys the golden case leaves out must be diffusers' defaults (the original's positional
    // time embedding, cos first, no shift, no class-embedding type).
    const UNetConfig c = UNetConfig::load(out + "/unet/config.json");
    const UNetConfig defaults;
    EXPECT_EQ(c.flip_sin_to_cos, defaults.flip_sin_to_cos);
    EXPECT_EQ(c.freq_shift, defaults.freq_shift);
    EXPECT_EQ(c.time_embedding_type, defaults.time_embedding_type);
    EXPECT_FALSE(c.class_embed_type.has_value());
    const json scheduler = read_json(out + "/scheduler/scheduler_config.json");
    for (const auto& [key, value] : cases["scheduler_config"].items())
      EXPECT_EQ(scheduler[key], value) << name << ": " << key;
    EXPECT_EQ(read_json(out + "/model_index.json")["_class_name"], "ConsistencyModelPipeline");
    // Every tensor is stored as float32 by default.
    SafeTensorsFile weights(out + "/unet/diffusion_pytorch_model.safetensors");
    for (const auto& t : weights.tensors()) EXPECT_EQ(t.dtype, DType::F32) << t.name;
  }
}

TEST_F(ConvertOriginal, AttentionIsSplitIntoThirds) {
  const PtStateDict original = read_pt_state_dict(kOriginal + "imagenet_like/model.pt");
  const PtTensor* qkv = nullptr;
  for (const auto& [k, t] : original) {
    if (k == "middle_block.1.qkv.weight") qkv = &t;
  }
  ASSERT_NE(qkv, nullptr);
  const PtTensor copy = *qkv;  // [192, 64, 1, 1]
  const ConvertedUNet u = convert_original_unet(original, sized(16), "model.pt");
  const char* names[] = {"to_q", "to_k", "to_v"};
  for (int k = 0; k < 3; ++k) {
    const std::string key = std::string("mid_block.attentions.0.") + names[k] + ".weight";
    const auto it = std::find_if(u.weights.begin(), u.weights.end(),
                                 [&](const auto& w) { return w.first == key; });
    ASSERT_NE(it, u.weights.end()) << key;
    EXPECT_EQ(it->second.shape, (std::vector<int64_t>{64, 64}));
    const std::size_t third = copy.data.size() / 3;
    EXPECT_TRUE(
        std::equal(it->second.data.begin(), it->second.data.end(), copy.data.begin() + k * third))
        << key;
  }
}

TEST_F(ConvertOriginal, ImageSizeIsRequiredWhenUnknowable) {
  const std::string m = error_of(
      [&] { convert_original_checkpoint(kOriginal + "bedroom_like/model.pt", path("out"), {}); });
  EXPECT_NE(m.find("--image-size"), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(path("out")));
}

TEST_F(ConvertOriginal, ForeignKeysAreNamed) {
  PtStateDict sd = read_pt_state_dict(kOriginal + "bedroom_like/model.pt");
  PtStateDict renamed = sd;
  renamed[3].first = "conv_in.weight";  // a diffusers name
  std::string m = error_of([&] { convert_original_unet(renamed, sized(16), "m.pt"); });
  EXPECT_NE(m.find("unexpected key 'conv_in.weight'"), std::string::npos) << m;

  PtStateDict extra = sd;
  extra.insert(extra.begin() + 10, {"middle_block.3.weight", sd[0].second});
  extra.push_back({"out.5.weight", sd[0].second});
  m = error_of([&] { convert_original_unet(extra, sized(16), "m.pt"); });
  EXPECT_NE(m.find("unexpected key 'middle_block.3.weight'"), std::string::npos) << m;

  PtStateDict missing = sd;
  missing.pop_back();  // out.2.bias
  m = error_of([&] { convert_original_unet(missing, sized(16), "m.pt"); });
  EXPECT_NE(m.find("missing key 'out.2.bias'"), std::string::npos) << m;

  PtStateDict wrong = sd;
  wrong.back().second.shape = {4};
  m = error_of([&] { convert_original_unet(wrong, sized(16), "m.pt"); });
  EXPECT_NE(m.find("'out.2.bias' has shape [4]"), std::string::npos) << m;
}

TEST_F(ConvertOriginal, HeadWidthCanBeChosen) {
  const PtStateDict sd = read_pt_state_dict(kOriginal + "bedroom_like/model.pt");
  ConvertOptions o = sized(16);
  o.num_head_channels = 32;
  EXPECT_EQ(convert_original_unet(sd, o, "m.pt").config.attention_head_dim, 32);
  o.num_head_channels = 24;
  const std::string m = error_of([&] { convert_original_unet(sd, o, "m.pt"); });
  EXPECT_NE(m.find("--num-head-channels"), std::string::npos) << m;
}

TEST_F(ConvertOriginal, Float16StoresHalfWeights) {
  const std::string in = kOriginal + "imagenet_like/model.pt";
  convert_original_checkpoint(in, path("f32"), sized(16));
  ConvertOptions o = sized(16);
  o.dtype = DType::F16;
  o.scheduler.num_train_timesteps = 201;
  convert_original_checkpoint(in, path("f16"), o);
  EXPECT_EQ(read_json(path("f16") + "/scheduler/scheduler_config.json")["num_train_timesteps"],
            201);
  SafeTensorsFile full(path("f32") + "/unet/diffusion_pytorch_model.safetensors");
  SafeTensorsFile half(path("f16") + "/unet/diffusion_pytorch_model.safetensors");
  ASSERT_EQ(full.tensors().size(), half.tensors().size());
  for (const auto& t : full.tensors()) {
    const TensorView* h = half.find(t.name);
    ASSERT_NE(h, nullptr) << t.name;
    ASSERT_EQ(h->dtype, DType::F16);
    ASSERT_EQ(h->shape, t.shape);
    const auto* f = static_cast<const float*>(t.data);
    const auto* b = static_cast<const uint16_t*>(h->data);
    for (std::size_t i = 0; i < t.nbytes / 4; ++i) {
      // Within half an ulp of 11 significant bits (or of the smallest normal's ulp).
      const double tol = std::max(std::abs(f[i]) * std::ldexp(1.0, -11), std::ldexp(1.0, -25));
      ASSERT_LE(std::abs(half_to_float(b[i]) - f[i]), tol) << t.name << "[" << i << "]";
    }
  }
}

TEST(Half, RoundsToNearestEven) {
  EXPECT_EQ(float_to_half(1.0f), 0x3c00);
  EXPECT_EQ(float_to_half(-2.0f), 0xc000);
  EXPECT_EQ(float_to_half(0.1f), 0x2e66);
  EXPECT_EQ(float_to_half(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_half(65520.0f), 0x7c00);               // halfway to infinity rounds up
  EXPECT_EQ(float_to_half(1.0f + 1.0f / 2048), 0x3c00);     // a tie, to the even 1.0
  EXPECT_EQ(float_to_half(1.0f + 3.0f / 2048), 0x3c02);     // a tie, to the even 1+2^-9
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -24)), 0x0001);  // the smallest subnormal
  EXPECT_EQ(float_to_half(std::ldexp(1.0f, -26)), 0x0000);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(half_to_float(0x3555), 0.333251953125f);
  EXPECT_TRUE(std::isnan(half_to_float(float_to_half(std::nanf("")))));
}

TEST_F(ConvertOriginal, NeverLeavesAHalfWrittenFolder) {
  ConvertOptions o = sized(16);
  o.class_names = {"only", "three", "names"};  // the model has 10 classes
  const std::string m = error_of(
      [&] { convert_original_checkpoint(kOriginal + "imagenet_like/model.pt", path("out"), o); });
  EXPECT_NE(m.find("3 class names for a model with 10 classes"), std::string::npos) << m;
  EXPECT_FALSE(fs::exists(path("out")));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0);
  // An existing folder is replaced only when asked.
  fs::create_directories(path("out"));
  const std::string exists = error_of([&] {
    convert_original_checkpoint(kOriginal + "imagenet_like/model.pt", path("out"), sized(16));
  });
  EXPECT_NE(exists.find("already exists"), std::string::npos) << exists;
  o.class_names.clear();
  for (int i = 0; i < 10; ++i) o.class_names.push_back("c" + std::to_string(i));
  o.overwrite = true;
  convert_original_checkpoint(kOriginal + "imagenet_like/model.pt", path("out"), o);
  EXPECT_EQ(read_class_names(path("out")), o.class_names);
}

}  // namespace
}  // namespace cm
