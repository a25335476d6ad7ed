// Zero-shot editing (Algorithm 4) on the golden tiny models: the invariants each task promises,
// whatever the (random) weights make of the rest.
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>

#include "cm/editing.h"
#include "cm/error.h"
#include "cm/output.h"
#include "cm/pipeline.h"
#include "golden.h"

namespace cm::test {
namespace {

ImageU8 make_image(int w, int h, int c, const std::function<int(int, int, int)>& f) {
  ImageU8 img;
  img.width = w;
  img.height = h;
  img.channels = c;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int ch = 0; ch < c; ++ch) img.pixels.push_back(static_cast<uint8_t>(f(x, y, ch) & 255));
  return img;
}

// Colourful and varied: gradients in each channel and a bright square.
ImageU8 test_image(int size, int channels = 3) {
  return make_image(size, size, channels, [size](int x, int y, int c) {
    const bool square = x > size / 4 && x < size / 2 && y > size / 3 && y < 3 * size / 4;
    return square ? 230 - 40 * c : (c == 0 ? 8 * x : c == 1 ? 7 * y : 100 + 3 * (x - y));
  });
}

// White (regenerate) on a disc off centre and a bar along the bottom; black (keep) elsewhere.
ImageU8 test_mask(int size) {
  return make_image(size, size, 1, [size](int x, int y, int) {
    const int dx = x - size / 3, dy = y - size / 2;
    return (dx * dx + dy * dy < size * size / 16 || y >= size - 3) ? 255 : 0;
  });
}

// [B, 3, H, W] -> [B, H, W]
at::Tensor luminance(const at::Tensor& x) {
  const auto w = at::tensor(std::vector<double>{0.2989, 0.5870, 0.1140}).reshape({1, 3, 1, 1});
  return (x.to(at::kDouble) * w).sum(1);
}

double max_abs(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no cm::Error thrown; expected one containing " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// One label for class-conditional models, none otherwise.
std::vector<int64_t> some_label(ConsistencyModelPipeline& pipe) {
  return pipe.unet()->config().num_class_embeds ? std::vector<int64_t>{5} : std::vector<int64_t>{};
}

TEST(EditTransforms, InverseUndoesForwardForEveryTransform) {
  auto gen = at::detail::createCPUGenerator(3);
  const auto x = at::randn({2, 3, 16, 16}, gen, at::TensorOptions().dtype(at::kFloat));
  std::vector<std::pair<std::string, LinearTransform>> transforms = {
      {"identity", LinearTransform::identity()}, {"colour", LinearTransform::colour()}};
  for (int p : {1, 2, 4, 8, 16})
    transforms.emplace_back("patches " + std::to_string(p), LinearTransform::patches(p));
  for (const auto& [name, a] : transforms) {
    SCOPED_TRACE(name);
    EXPECT_LE(max_abs(a.inverse(a.forward(x)), x), 1e-6);
    const auto xd = x.to(at::kDouble);
    EXPECT_LE(max_abs(a.inverse(a.forward(xd)), xd), 1e-12);
    EXPECT_LE(max_abs(a.forward(a.inverse(xd)), xd), 1e-12);
    if (a.is_identity()) continue;
    const auto& q = a.matrix();
    EXPECT_LE(max_abs(q.t().matmul(q), at::eye(q.size(0), at::kDouble)), 1e-12);
    EXPECT_GT(q.select(1, 0).min().item<double>(), 0);  // the first axis points the positive way
  }
}

TEST(EditTransforms, FirstAxesAreLuminanceAndPatchMean) {
  auto gen = at::detail::createCPUGenerator(4);
  const auto x = at::randn({1, 3, 8, 8}, gen, at::TensorOptions().dtype(at::kDouble));
  const auto lum = luminance(x);
  const double norm = std::sqrt(0.2989 * 0.2989 + 0.5870 * 0.5870 + 0.1140 * 0.1140);
  EXPECT_LE(max_abs(LinearTransform::colour().forward(x).select(1, 0), lum / norm), 1e-12);
  for (int p : {2, 4}) {
    const auto coef = LinearTransform::patches(p).forward(x);
    using at::indexing::None;
    using at::indexing::Slice;
    const auto top_left =
        coef.index({Slice(), Slice(), Slice(None, None, p), Slice(None, None, p)});
    EXPECT_LE(max_abs(top_left, at::avg_pool2d(x, p) * p), 1e-12) << p;
  }
  expect_error([&] { LinearTransform::patches(3).forward(x); }, "does not divide");
}

TEST(EditGolden, InpaintingKeepsTheKeptPixelsExactly) {
  for (const auto& name : golden_names()) {
    SCOPED_TRACE(name);
    auto pipe = ConsistencyModelPipeline::from_pretrained(golden(name).model_dir);
    const int size = pipe.unet()->config().sample_size;
    EditOptions o;
    o.task = EditTask::kInpaint;
    o.image = test_image(size);
    o.mask = test_mask(size);
    o.seed = 1;
    o.batch_size = 2;
    const EditResult r = edit(pipe, o);
    ASSERT_EQ(r.samples.sizes(), (at::IntArrayRef{2, 3, size, size}));
    EXPECT_EQ(r.sigmas.size(), 20u);
    const auto keep = (image_to_tensor(o.mask, 1) < 0).expand_as(r.samples);
    const auto ref = image_to_tensor(o.image, 3).expand_as(r.samples);
    EXPECT_TRUE(at::equal(r.samples.masked_select(keep), ref.masked_select(keep)));
    EXPECT_GT(max_abs(r.samples.masked_select(~keep), ref.masked_select(~keep)), 0.05);
    // And in the 8-bit output: the kept pixels are the input's bytes.
    const auto out = to_uint8_images(r.images);
    size_t kept = 0, differ = 0;
    for (const auto& img : out) {
      for (size_t i = 0; i < img.pixels.size(); ++i) {
        if (o.mask.pixels[i / 3] != 0) continue;
        ++kept;
        differ += img.pixels[i] != o.image.pixels[i];
      }
    }
    EXPECT_GT(kept, 0u);
    EXPECT_EQ(differ, 0u);
  }
}

TEST(EditGolden, ColorizationKeepsTheLuminance) {
  for (const auto& name : golden_names()) {
    SCOPED_TRACE(name);
    auto pipe = ConsistencyModelPipeline::from_pretrained(golden(name).model_dir);
    const int size = pipe.unet()->config().sample_size;
    for (int channels : {3, 1}) {  // a colour photograph or an already gray one
      EditOptions o;
      o.task = EditTask::kColorize;
      o.image = test_image(size, channels);
      o.seed = 2;
      o.num_inference_steps = 4;
      const EditResult r = edit(pipe, o);
      const auto ref = image_to_tensor(o.image, 3);
      EXPECT_LE(max_abs(luminance(r.samples), luminance(ref)), 1e-5) << channels;
      // What the model saw is the gray image; what came out has colour.
      const auto seen = r.projected.permute({0, 3, 1, 2});
      EXPECT_LE(max_abs(seen.select(1, 0), seen.select(1, 2)), 1e-6);
      EXPECT_GT(max_abs(r.samples.select(1, 0), r.samples.select(1, 2)), 0.01);
    }
  }
}

TEST(EditGolden, SuperResolutionKeepsTheBlockMeans) {
  for (const auto& name : golden_names()) {
    SCOPED_TRACE(name);
    auto pipe = ConsistencyModelPipeline::from_pretrained(golden(name).model_dir);
    const int size = pipe.unet()->config().sample_size;
    // A low-resolution image: its pixels become the block means.
    EditOptions low;
    low.task = EditTask::kSuperres;
    low.image = test_image(size / 4);
    low.seed = 3;
    low.num_inference_steps = 5;
    const EditResult r = edit(pipe, low);
    EXPECT_EQ(r.factor, 4);
    EXPECT_LE(max_abs(at::avg_pool2d(r.samples, 4), image_to_tensor(low.image, 3)), 1e-5);
    EXPECT_GT(max_abs(r.images, r.reference), 0.01);  // detail added within the blocks
    // A full-size image and a factor: its own block means are kept.
    EditOptions full = low;
    full.image = test_image(size);
    full.factor = 8;
    const EditResult f = edit(pipe, full);
    EXPECT_LE(
        max_abs(at::avg_pool2d(f.samples, 8), at::avg_pool2d(image_to_tensor(full.image, 3), 8)),
        1e-5);
    full.factor = 5;
    expect_error([&] { edit(pipe, full); }, "factor: 5 does not divide");
    low.image = test_image(size / 4 + 1);
    expect_error([&] { edit(pipe, low); }, "does not divide the model's size");
  }
}

TEST(EditGolden, InterpolationEndsAreThePlainGenerations) {
  for (const auto& name : golden_names()) {
    auto pipe = ConsistencyModelPipeline::from_pretrained(golden(name).model_dir);
    for (int steps : {1, 3}) {
      SCOPED_TRACE(name + " steps " + std::to_string(steps));
      EditOptions o;
      o.task = EditTask::kInterpolate;
      o.seed = 11;
      o.seed2 = 12;
      o.frames = 4;
      o.num_inference_steps = steps;
      o.class_labels = some_label(pipe);
      const EditResult r = edit(pipe, o);
      ASSERT_EQ(r.images.size(0), 4);
      GenerateOptions g;
      g.num_inference_steps = steps;
      g.class_labels = o.class_labels;
      g.seed = 11;
      const auto a = pipe(g).images;
      g.seed = 12;
      const auto b = pipe(g).images;
      EXPECT_TRUE(at::equal(r.images.slice(0, 0, 1), a)) << max_abs(r.images.slice(0, 0, 1), a);
      EXPECT_TRUE(at::equal(r.images.slice(0, 3, 4), b)) << max_abs(r.images.slice(0, 3, 4), b);
      EXPECT_GT(max_abs(r.images.slice(0, 1, 2), a), 1e-3);
      EXPECT_GT(max_abs(r.images.slice(0, 1, 2), b), 1e-3);
    }
  }
}

TEST(EditGolden, DenoiseIsOneCallOfTheDenoiser) {
  for (const auto& name : golden_names()) {
    SCOPED_TRACE(name);
    auto pipe = ConsistencyModelPipeline::from_pretrained(golden(name).model_dir);
    const int size = pipe.unet()->config().sample_size;
    EditOptions o;
    o.task = EditTask::kDenoise;
    o.image = test_image(size);
    o.sigma = 0.7;
    o.class_labels = some_label(pipe);
    const EditResult r = edit(pipe, o);
    // The consistency function written out: c_skip·x + c_out·F(x/√(σ²+σd²), 250·ln σ), clamped.
    const auto& c = pipe.scheduler().config();
    const double s = o.sigma, sd = c.sigma_data, smin = c.sigma_min;
    const double c_skip = sd * sd / ((s - smin) * (s - smin) + sd * sd);
    const double c_out = (s - smin) * sd / std::sqrt(s * s + sd * sd);
    const auto x = image_to_tensor(o.image, 3);
    std::optional<at::Tensor> labels;
    if (!o.class_labels.empty()) labels = at::tensor(o.class_labels);
    at::Tensor expected;
    {
      torch::NoGradGuard no_grad;
      const auto f =
          pipe.unet()->forward(x / std::sqrt(s * s + sd * sd),
                               at::scalar_tensor(250 * std::log(s), at::kDouble), labels);
      expected = (c_skip * x + c_out * f).clamp(-1, 1);
    }
    EXPECT_LE(max_abs(r.samples, expected), 1e-5);
    EXPECT_EQ(r.sigmas.size(), 1u);
    // With add_noise the model sees the image plus σ·z.
    o.add_noise = true;
    o.seed = 9;
    const EditResult n = edit(pipe, o);
    EXPECT_GT(max_abs(n.projected, r.reference), 0.1);
    EXPECT_GT(max_abs(n.samples, r.samples), 1e-3);
    o.sigma = 100;
    expect_error([&] { edit(pipe, o); }, "sigma: 100");
  }
}

TEST(EditGolden, ASeedReproducesAnEdit) {
  for (const auto& name : golden_names()) {
    SCOPED_TRACE(name);
    auto pipe = ConsistencyModelPipeline::from_pretrained(golden(name).model_dir);
    const int size = pipe.unet()->config().sample_size;
    for (EditTask task : {EditTask::kStroke, EditTask::kInpaint, EditTask::kSuperres}) {
      EditOptions o;
      o.task = task;
      o.image = test_image(size);
      o.mask = test_mask(size);
      o.factor = 4;
      o.seed = 5;
      o.num_inference_steps = task == EditTask::kStroke ? 0 : 6;
      const auto first = edit(pipe, o).samples;
      const auto again = edit(pipe, o).samples;
      EXPECT_TRUE(at::equal(first, again)) << edit_task_name(task);
      o.seed = 6;
      EXPECT_GT(max_abs(edit(pipe, o).samples, first), 1e-3) << edit_task_name(task);
    }
  }
}

TEST(EditGolden, TimePoints) {
  for (const auto& name : golden_names()) {
    SCOPED_TRACE(name);
    auto pipe = ConsistencyModelPipeline::from_pretrained(golden(name).model_dir);
    const int size = pipe.unet()->config().sample_size;
    EditOptions o;
    o.task = EditTask::kStroke;
    o.image = test_image(size);
    auto r = edit(pipe, o);
    ASSERT_EQ(r.sigmas.size(), 2u);
    EXPECT_NEAR(r.sigmas[0], 5.38, 1e-6);
    EXPECT_NEAR(r.sigmas[1], 2.24, 1e-6);
    o.num_inference_steps = 3;
    r = edit(pipe, o);
    ASSERT_EQ(r.sigmas.size(), 3u);
    EXPECT_NEAR(r.sigmas[0], pipe.scheduler().config().sigma_max, 1e-4);
    o.num_inference_steps = 0;
    o.timesteps = {22, 0};
    EXPECT_EQ(edit(pipe, o).sigmas.size(), 2u);
    o.timesteps.clear();
    o.sigmas = {1.0, 3.0};
    expect_error([&] { edit(pipe, o); }, "descending");
  }
}

TEST(EditGolden, BadInputsNameWhatIsWrong) {
  const auto& g = golden(golden_names().front());
  auto pipe = ConsistencyModelPipeline::from_pretrained(g.model_dir);
  const int size = pipe.unet()->config().sample_size;
  EditOptions o;
  o.image = test_image(size);
  o.mask = test_mask(size / 2);
  expect_error([&] { edit(pipe, o); }, "mask: 16x16 is not the image's size 32x32");
  o.mask = ImageU8{};
  expect_error([&] { edit(pipe, o); }, "needs a mask");
  o.task = EditTask::kStroke;
  o.image = test_image(size / 2);
  expect_error([&] { edit(pipe, o); }, "image: 16x16 is not the model's size 32x32");
  o.image = ImageU8{};
  expect_error([&] { edit(pipe, o); }, "stroke: needs an image");
  expect_error([] { parse_edit_task("paint"); }, "task: unknown 'paint'");
  EXPECT_EQ(parse_edit_task("superres"), EditTask::kSuperres);
}

// A 1-channel model with random weights: every task but colorize applies.
TEST(EditGray, GrayscaleModelsEditToo) {
  UNetConfig c;
  c.sample_size = 16;
  c.in_channels = 1;
  c.out_channels = 1;
  c.block_out_channels = {32, 32};
  c.down_block_types = {"DownBlock2D", "DownBlock2D"};
  c.up_block_types = {"UpBlock2D", "UpBlock2D"};
  c.layers_per_block = 1;
  torch::manual_seed(0);
  ConsistencyModelPipeline pipe{UNet2DModel(c), CMStochasticIterativeScheduler()};
  EditOptions o;
  o.image = test_image(16);  // RGB in, converted to the model's gray
  o.mask = test_mask(16);
  o.factor = 4;
  o.sigma = 1.5;
  o.frames = 2;
  for (EditTask task : {EditTask::kInpaint, EditTask::kSuperres, EditTask::kStroke,
                        EditTask::kDenoise, EditTask::kInterpolate}) {
    o.task = task;
    const auto r = edit(pipe, o);
    EXPECT_EQ(r.images.size(3), 1) << edit_task_name(task);
    EXPECT_EQ(r.images.size(1), 16) << edit_task_name(task);
  }
  o.task = EditTask::kColorize;
  expect_error([&] { edit(pipe, o); }, "colorize: needs a 3-channel model");
}

}  // namespace
}  // namespace cm::test
