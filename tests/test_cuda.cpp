// GPU tests (CUDA builds only). Each one reports itself skipped, with the reason, where no CUDA
// device is present: they run on a GPU machine through scripts/gpu_check.sh.
#include <torch/cuda.h>
#include <torch/torch.h>

#include <filesystem>

#include "cm/pipeline.h"
#include "cm/unet.h"
#include "golden.h"

namespace cm::test {
namespace {

namespace fs = std::filesystem;

#define SKIP_WITHOUT_GPUS(n)                                                                   \
  do {                                                                                         \
    const int gpus = static_cast<int>(torch::cuda::device_count());                           \
    if (gpus < (n))                                                                            \
      GTEST_SKIP() << "needs " << (n) << " CUDA device(s), this machine has " << gpus;         \
  } while (0)

LoadOptions cuda_load(at::ScalarType dtype, int device = 0) {
  LoadOptions l;
  l.device = at::Device(at::kCUDA, static_cast<at::DeviceIndex>(device));
  l.dtype = dtype;
  return l;
}

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}
double mean_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().mean().item<double>();
}

// float32 with TF32 off against diffusers' CPU float32 vectors: the UNet call and every
// pipeline case, eager and through a CUDA graph. 1e-3: GPU kernels sum in other orders.
TEST(Cuda, Float32MatchesTheGoldenVectors) {
  SKIP_WITHOUT_GPUS(1);
  for (const auto& name : golden_names()) {
    const Golden& g = golden(name);
    SCOPED_TRACE(name);
    auto unet = load_unet((fs::path(g.model_dir) / "unet").string(), at::kFloat,
                          at::Device(at::kCUDA, 0));
    at::globalContext().setAllowTF32CuDNN(false);
    at::globalContext().setAllowTF32CuBLAS(false);
    {
      torch::InferenceMode guard;
      for (const auto& c : g.cases["unet"]) {
        const std::string prefix = c["prefix"];
        std::optional<at::Tensor> labels;
        if (g.tensors.count(prefix + "class_labels"))
          labels = g.tensor(prefix + "class_labels").to(at::kCUDA);
        const auto out = unet->forward(g.tensor(prefix + "sample").to(at::kCUDA),
                                       g.tensor(prefix + "timestep").to(at::kCUDA), labels);
        EXPECT_TRUE(close_scaled(out.cpu(), g.tensor(prefix + "out"), 1e-3)) << prefix;
      }
    }
    auto pipe = ConsistencyModelPipeline::from_pretrained(g.model_dir, cuda_load(at::kFloat));
    for (const bool graphs : {false, true}) {
      for (const auto& c : g.cases["pipeline"]) {
        const std::string prefix = c["prefix"];
        auto o = golden_call(c);
        o.cuda_graphs = graphs;
        const auto r = pipe(o);
        EXPECT_TRUE(close_scaled(r.images, g.tensor(prefix + "images"), 1e-3))
            << prefix << (graphs ? " (graph)" : " (eager)");
      }
    }
  }
}

// Reduced precision against float32 on the same GPU, same seed. Images are in [0, 1]; the bounds
// are those of one rounding per layer over a small UNet: float16 has 11 significant bits,
// bfloat16 8 (so about 8x the error).
TEST(Cuda, HalfPrecisionIsCloseToFloat32) {
  SKIP_WITHOUT_GPUS(1);
  const Golden& g = golden("tiny_cond");
  auto ref = ConsistencyModelPipeline::from_pretrained(g.model_dir, cuda_load(at::kFloat));
  GenerateOptions o;
  o.batch_size = 4;
  o.timesteps = {22, 0};
  o.seed = 7;
  o.class_labels = {1, 2, 3, 4};
  const auto want = ref(o).images;
  struct Bound {
    at::ScalarType dtype;
    double max, mean;
  };
  for (const Bound b : {Bound{at::kHalf, 0.03, 0.003}, Bound{at::kBFloat16, 0.2, 0.02}}) {
    auto pipe = ConsistencyModelPipeline::from_pretrained(g.model_dir, cuda_load(b.dtype));
    const auto got = pipe(o).images;
    SCOPED_TRACE(c10::toString(b.dtype));
    EXPECT_LE(max_abs(got, want), b.max);
    EXPECT_LE(mean_abs(got, want), b.mean);
  }
}

// The captured loop replays exactly what eager execution computes, for one and two steps and
// every dtype; replaying again (new seed, same shapes) reuses the graph.
TEST(Cuda, GraphReplayEqualsEagerBitForBit) {
  SKIP_WITHOUT_GPUS(1);
  const Golden& g = golden("tiny_cond");
  for (const auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    auto pipe = ConsistencyModelPipeline::from_pretrained(g.model_dir, cuda_load(dtype));
    for (const auto& ts : std::vector<std::vector<int64_t>>{{39}, {22, 0}}) {
      for (const uint64_t seed : {1u, 2u}) {
        GenerateOptions o;
        o.batch_size = 3;
        o.timesteps = ts;
        o.seed = seed;
        o.cuda_graphs = false;
        const auto eager = pipe(o).images;
        o.cuda_graphs = true;
        const auto replay = pipe(o).images;
        EXPECT_TRUE(at::equal(eager, replay))
            << c10::toString(dtype) << " steps " << ts.size() << " seed " << seed
            << " max diff " << max_abs(eager, replay);
      }
    }
    EXPECT_EQ(pipe.cuda_graph_count(), 2u) << "one graph per timesteps list, reused across seeds";
  }
}

TEST(Cuda, SameSeedSameImage) {
  SKIP_WITHOUT_GPUS(1);
  const Golden& g = golden("tiny_uncond");
  auto pipe = ConsistencyModelPipeline::from_pretrained(g.model_dir, cuda_load(at::kHalf));
  GenerateOptions o;
  o.batch_size = 2;
  o.num_inference_steps = 2;
  o.seed = 1234;
  const auto a = pipe(o).images;
  const auto b = pipe(o).images;
  EXPECT_TRUE(at::equal(a, b));
  o.seed = 1235;
  EXPECT_FALSE(at::equal(a, pipe(o).images));
}

// A batch split over two GPUs gives one GPU's images: the noise is drawn for the whole batch
// first. Per-sample results can differ by kernel choice for another batch size, hence 1e-5.
TEST(Cuda, MultiGpuSplitEqualsOneGpu) {
  SKIP_WITHOUT_GPUS(2);
  const Golden& g = golden("tiny_cond");
  auto one = ConsistencyModelPipeline::from_pretrained(g.model_dir, cuda_load(at::kFloat));
  auto load = cuda_load(at::kFloat);
  load.devices = {0, 1};
  auto two = ConsistencyModelPipeline::from_pretrained(g.model_dir, load);
  ASSERT_EQ(two.devices().size(), 2u);
  GenerateOptions o;
  o.batch_size = 5;
  o.timesteps = {22, 0};
  o.seed = 3;
  for (const bool graphs : {false, true}) {
    o.cuda_graphs = graphs;
    const auto a = one(o), b = two(o);
    EXPECT_EQ(a.class_labels, b.class_labels);
    EXPECT_LE(max_abs(a.images, b.images), 1e-5) << (graphs ? "graphs" : "eager");
  }
}

}  // namespace
}  // namespace cm::test
