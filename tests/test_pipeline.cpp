// The whole pipeline against diffusers: seeded generation (float and uint8 images) and
// caller-supplied latents.
#include <ATen/CPUGeneratorImpl.h>

#include <thread>

#include "cm/denoiser.h"
#include "cm/error.h"
#include "cm/output.h"
#include "cm/pipeline.h"
#include "golden.h"

namespace cm::test {
namespace {

at::Tensor stack_uint8(const at::Tensor& images) {
  std::vector<at::Tensor> parts;
  for (const auto& img : to_uint8_images(images)) {
    parts.push_back(at::from_blob(const_cast<uint8_t*>(img.pixels.data()),
                                  {img.height, img.width, img.channels}, at::kByte)
                        .clone());
  }
  return at::stack(parts);
}

TEST(PipelineGolden, SeededImagesMatchDiffusers) {
  for (const auto& name : golden_names()) {
    const Golden& g = golden(name);
    auto pipe = ConsistencyModelPipeline::from_pretrained(g.model_dir);
    ASSERT_FALSE(g.cases["pipeline"].empty());
    for (const auto& c : g.cases["pipeline"]) {
      const std::string prefix = c["prefix"];
      SCOPED_TRACE(name + " " + c.dump());
      auto o = golden_call(c);
      const auto r = pipe(o);
      const auto expected = g.tensor(prefix + "images");
      EXPECT_TRUE(close_scaled(r.images, expected)) << "images";
      EXPECT_TRUE(uint8_match(stack_uint8(r.images), g.tensor(prefix + "uint8"), expected));
      if (!o.class_labels.empty()) {
        std::vector<int64_t> want = o.class_labels;
        if (want.size() == 1) want.assign(o.batch_size, want[0]);
        EXPECT_EQ(r.class_labels, want);
      }
    }
  }
}

TEST(PipelineGolden, InitialNoiseIsTorchGeneratorDraw) {
  for (const auto& name : golden_names()) {
    const Golden& g = golden(name);
    for (const auto& c : g.cases["pipeline"]) {
      const std::string prefix = c["prefix"];
      const auto expected = g.tensor(prefix + "initial_noise");
      auto gen = at::detail::createCPUGenerator(c["seed"].get<uint64_t>());
      const auto noise = at::randn(expected.sizes(), gen);
      EXPECT_TRUE(at::equal(noise, expected)) << name << " " << prefix;
    }
  }
}

TEST(PipelineGolden, CallerSuppliedLatents) {
  for (const auto& name : golden_names()) {
    const Golden& g = golden(name);
    auto pipe = ConsistencyModelPipeline::from_pretrained(g.model_dir);
    ASSERT_FALSE(g.cases["latents"].empty());
    for (const auto& c : g.cases["latents"]) {
      const std::string prefix = c["prefix"];
      SCOPED_TRACE(name + " " + prefix);
      auto o = golden_call(c);
      o.latents = g.tensor(prefix + "latents");
      o.seed = 987654321;  // must not matter for a one-step run with given latents
      const auto r = pipe(o);
      EXPECT_TRUE(close_scaled(r.images, g.tensor(prefix + "images")));
    }
  }
}

TEST(PipelineGolden, StepCallbackSeesEveryStep) {
  const Golden& g = golden(golden_names().front());
  auto pipe = ConsistencyModelPipeline::from_pretrained(g.model_dir);
  GenerateOptions o;
  o.num_inference_steps = 3;
  std::vector<int> seen;
  o.on_step = [&](int i, int n, double, const at::Tensor& sample) {
    EXPECT_EQ(n, 3);
    EXPECT_EQ(sample.size(0), 1);
    seen.push_back(i);
  };
  pipe(o);
  EXPECT_EQ(seen, (std::vector<int>{0, 1, 2}));
}

TEST(PipelineErrors, BadOptionsGiveClearErrors) {
  for (const auto& name : golden_names()) {
    const Golden& g = golden(name);
    auto pipe = ConsistencyModelPipeline::from_pretrained(g.model_dir);
    const bool conditional = pipe.unet()->is_class_conditional();
    auto message = [&](GenerateOptions o) -> std::string {
      try {
        pipe(o);
      } catch (const Error& e) {
        return e.what();
      }
      return "(no error)";
    };
    GenerateOptions o;
    o.batch_size = -1;
    EXPECT_NE(message(o).find("batch size"), std::string::npos);
    o = {};
    o.timesteps = {0, 5};
    EXPECT_NE(message(o).find("descending"), std::string::npos);
    o = {};
    o.class_labels = {conditional ? 1000 : 1};
    EXPECT_NE(message(o).find(conditional ? "out of range" : "not class-conditional"),
              std::string::npos);
    o = {};
    o.latents = at::zeros({1, 3, 8, 8});
    EXPECT_NE(message(o).find("latents"), std::string::npos);
  }
  try {
    ConsistencyModelPipeline::from_pretrained("/nonexistent/model");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/model"), std::string::npos);
  }
}

UNetConfig tiny_trigflow_unet() {
  UNetConfig c;
  c.sample_size = 8;
  c.in_channels = c.out_channels = 1;
  c.block_out_channels = {8, 16};
  c.down_block_types = {"ResnetDownsampleBlock2D", "AttnDownBlock2D"};
  c.up_block_types = {"AttnUpBlock2D", "ResnetUpsampleBlock2D"};
  c.downsample_type = c.upsample_type = "resnet";
  c.layers_per_block = 1;
  c.attention_head_dim = 8;
  c.norm_num_groups = 4;
  c.num_class_embeds = 3;
  return c;
}

// A TrigFlow pipeline samples its EDM denoiser D in TrigFlow time, written here in D's terms
// alone: the noise drawn first, one more draw per step (diffusers' SCMScheduler draws at every
// step); x̂ = σd·noise; at time t the image D(x̂/cos t', σd·tan t') with t' = min(t, atan(σmax/σd));
// then the next time's cos t·x₀ + sin t·σd·noise.
TEST(TrigFlowPipeline, StepsAreTheEdmDenoiserInTrigFlowTime) {
  torch::manual_seed(5);
  UNet2DModel unet(tiny_trigflow_unet());
  UNet2DModel reference = UNet2DModel(tiny_trigflow_unet());
  {
    torch::NoGradGuard no_grad;
    reference->load_state_dict(unet->state_dict(), "copy");
  }
  reference->eval();
  SCMSchedulerConfig sc;
  sc.sigma_data = 0.5;
  sc.sigma_max = 20;
  ConsistencyModelPipeline pipe(unet, SCMScheduler(sc));
  ASSERT_TRUE(pipe.is_trigflow());
  for (int steps : {1, 2, 3}) {
    SCOPED_TRACE(steps);
    GenerateOptions o;
    o.batch_size = 2;
    o.seed = 11;
    o.class_labels = {2, 0};
    o.num_inference_steps = steps;
    const auto got = pipe(o);

    torch::NoGradGuard no_grad;
    auto gen = at::detail::createCPUGenerator(11);
    const auto noise = at::randn({2, 1, 8, 8}, gen, at::TensorOptions().dtype(at::kFloat));
    std::vector<at::Tensor> step_noise;
    for (int i = 0; i < steps; ++i)
      step_noise.push_back(at::randn({2, 1, 8, 8}, gen, at::TensorOptions().dtype(at::kFloat)));
    const std::vector<double> times =
        steps == 1 ? std::vector<double>{1.5708, 0}
        : steps == 2 ? std::vector<double>{1.5708, 1.3, 0}
                     : std::vector<double>{1.5708, 1.5708 * 2 / 3, 1.5708 / 3, 0};
    const at::Tensor labels = at::tensor(std::vector<int64_t>{2, 0});
    at::Tensor x = noise * 0.5;
    at::Tensor x0;
    for (int i = 0; i < steps; ++i) {
      const double t = std::min(times[i], std::atan(20 / 0.5));
      const auto sigma = at::full({2}, 0.5 * std::tan(t), at::kFloat);
      x0 = edm_denoise(*reference, x / std::cos(t), sigma, labels, 0.5);
      x = std::cos(times[i + 1]) * x0 + std::sin(times[i + 1]) * 0.5 * step_noise[i];
    }
    const auto want = (x0 / 2 + 0.5).clamp(0, 1).permute({0, 2, 3, 1});
    EXPECT_LT((got.images - want).abs().max().item<double>(), 2e-5);
    EXPECT_EQ(got.timesteps.size(), static_cast<size_t>(steps));
  }
  GenerateOptions indices;
  indices.timesteps = {22, 0};
  EXPECT_THROW(pipe(indices), Error);
}

}  // namespace
}  // namespace cm::test

namespace cm::test {
namespace {

// One loaded pipeline shared by several threads (a server's case): each call keeps its own
// schedule, the first calls pack the convolutions concurrently, and every thread gets what a
// serial call on a pipeline of its own gives.
TEST(PipelineThreads, ConcurrentCallsGiveTheSerialResults) {
  const Golden& g = golden("tiny_cond");
  auto serial = ConsistencyModelPipeline::from_pretrained(g.model_dir);
  auto shared = ConsistencyModelPipeline::from_pretrained(g.model_dir);
  std::vector<GenerateOptions> calls(6);
  for (size_t i = 0; i < calls.size(); ++i) {
    calls[i].seed = 100 + i;
    calls[i].batch_size = 1 + i % 2;
    if (i % 3 == 0) calls[i].timesteps = {22, 0};
    else calls[i].num_inference_steps = 1 + i % 3;
  }
  std::vector<at::Tensor> want, got(calls.size());
  for (const auto& o : calls) want.push_back(serial(o).images);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < calls.size(); ++i)
    threads.emplace_back([&, i] { got[i] = shared(calls[i]).images; });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < calls.size(); ++i)
    EXPECT_TRUE(close_scaled(got[i], want[i], 1e-6)) << "call " << i;
}

}  // namespace
}  // namespace cm::test
