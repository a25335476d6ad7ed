// cm convert end to end: the real binary converts the golden original-format checkpoints with no
// more than --image-size, and cm generate on the result gives diffusers' images (golden
// original/*/cases.safetensors, to 1e-4); bad input is a one-line error and leaves no folder.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cm/config.h"
#include "cm/image_io.h"
#include "cm/unet.h"
#include "golden.h"
#include "io/state_dict.h"
#include "run_cm.h"
#include "temp_dir_test.h"

namespace cm {
namespace {

namespace fs = std::filesystem;
using test::run_cm;

const std::string kOriginal = CM_GOLDEN_DIR "/original/";

class ConvertCli : public test::TempDirTest {
 protected:
  // Converts the case's model.pt with only --image-size (the scheduler flags are the defaults
  // every golden case uses, checked here).
  std::string convert(const std::string& name, const nlohmann::json& cases) {
    const auto& sc = cases["scheduler_config"];
    EXPECT_EQ(sc["num_train_timesteps"], 40);
    EXPECT_EQ(sc["sigma_min"], 0.002);
    EXPECT_EQ(sc["sigma_max"], 80.0);
    const std::string out = path(name);
    const auto r = run_cm("convert " + kOriginal + name + "/model.pt -o " + out + " --image-size " +
                          std::to_string(cases["original_flags"]["image_size"].get<int>()));
    EXPECT_EQ(r.status, 0) << r.output;
    return out;
  }
};

std::string join(const nlohmann::json& list) {
  std::string s;
  for (const auto& v : list) s += (s.empty() ? "" : ",") + std::to_string(v.get<int>());
  return s;
}

TEST_F(ConvertCli, GenerateReproducesEveryGoldenPipelineCase) {
  for (const std::string name : {"imagenet_like", "bedroom_like"}) {
    const auto cases = nlohmann::json::parse(read_text_file(kOriginal + name + "/cases.json"));
    const std::string model = convert(name, cases);
    const auto golden = read_state_dict(kOriginal + name + "/cases.safetensors");
    ASSERT_EQ(cases["cases"].size(), 3u);
    for (const auto& c : cases["cases"]) {
      const std::string key = c["name"];
      std::string args = "generate -m " + model + " --seed " +
                         std::to_string(c["seed"].get<int>()) + " -n " +
                         std::to_string(c["batch_size"].get<int>());
      if (!c["timesteps"].is_null()) {
        args += " --timesteps " + join(c["timesteps"]);
      } else {
        args += " --steps " + std::to_string(c["num_inference_steps"].get<int>());
      }
      if (!c["class_labels"].is_null()) args += " --class " + join(c["class_labels"]);
      const std::string npy = path(name + "_" + key + ".npy");
      const auto r = run_cm(args + " -q -o " + npy);
      ASSERT_EQ(r.status, 0) << r.output;
      const NpyArray a = read_npy(npy);
      const at::Tensor& expected = golden.at(key);
      ASSERT_EQ(a.shape, expected.sizes().vec()) << name << " " << key;
      const auto got = at::from_blob(const_cast<uint8_t*>(a.data.data()), a.shape, at::kFloat);
      EXPECT_LE((got - expected).abs().max().item<float>(), 1e-4) << name << " " << key;
    }
  }
}

TEST_F(ConvertCli, ConvertedUNetGivesTheGoldenOutput) {
  for (const std::string name : {"imagenet_like", "bedroom_like"}) {
    const auto cases = nlohmann::json::parse(read_text_file(kOriginal + name + "/cases.json"));
    const std::string model = convert(name, cases);
    const auto golden = read_state_dict(kOriginal + name + "/cases.safetensors");
    UNet2DModel unet = load_unet(model + "/unet");
    torch::NoGradGuard no_grad;
    const at::Tensor t = 250.0 * at::log(golden.at("unet.sigma"));
    std::optional<at::Tensor> labels;
    if (golden.count("unet.class_labels")) labels = golden.at("unet.class_labels");
    const at::Tensor out = unet->forward(golden.at("unet.input"), t, labels);
    EXPECT_TRUE(test::close_scaled(out, golden.at("unet.output"), 1e-4)) << name;
  }
}

TEST_F(ConvertCli, BadInputIsOneLineAndLeavesNoFolder) {
  // Not a checkpoint at all.
  auto r = run_cm("convert " + kOriginal + "imagenet_like/cases.json -o " + path("a"));
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(r.output.rfind("error: ", 0), 0u) << r.output;
  EXPECT_NE(r.output.find("not a PyTorch checkpoint"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(fs::exists(path("a")));

  // A truncated copy of a real one.
  {
    std::ifstream in(kOriginal + "bedroom_like/model.pt", std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(path("cut.pt"), std::ios::binary).write(bytes.data(), bytes.size() / 3);
  }
  r = run_cm("convert " + path("cut.pt") + " -o " + path("b") + " --image-size 16");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("cut.pt: truncated"), std::string::npos) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_FALSE(fs::exists(path("b")));

  // The image size cannot be known for these multipliers.
  r = run_cm("convert " + kOriginal + "bedroom_like/model.pt -o " + path("c"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("--image-size"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(path("c")));
}

TEST_F(ConvertCli, ClassNamesAndHalfWeights) {
  {
    std::ofstream names(path("names.txt"));
    for (int i = 0; i < 10; ++i) names << "class " << i << "\n";
  }
  const auto r = run_cm("convert " + kOriginal + "imagenet_like/model.pt -o " + path("m") +
                        " --image-size 16 --dtype float16 --class-names " + path("names.txt") +
                        " --num-train-timesteps 201");
  ASSERT_EQ(r.status, 0) << r.output;
  const auto names = read_class_names(path("m"));
  ASSERT_EQ(names.size(), 10u);
  EXPECT_EQ(names[3], "class 3");
  const auto weights = read_state_dict(path("m") + "/unet/diffusion_pytorch_model.safetensors");
  for (const auto& [k, v] : weights) EXPECT_EQ(v.scalar_type(), at::kHalf) << k;
  EXPECT_EQ(
      SchedulerConfig::load(path("m") + "/scheduler/scheduler_config.json").num_train_timesteps,
      201);
  // cm generate takes the names and the half weights.
  const auto g =
      run_cm("generate -m " + path("m") + " --class 'class 3' --steps 1 -q -o " + path("x.png"));
  EXPECT_EQ(g.status, 0) << g.output;
}

}  // namespace
}  // namespace cm
