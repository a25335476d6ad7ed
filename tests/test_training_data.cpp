// Training inputs beyond Fashion-MNIST: image folders (labels from sub-folders, unreadable files
// skipped and counted), and the RAdam optimizer against its formula.
#include <filesystem>
#include <fstream>

#include "cm/error.h"
#include "cm/image_io.h"
#include "cm/training.h"
#include "temp_dir_test.h"
#include "training/image_folder.h"
#include "training/radam.h"

namespace cm::test {
namespace {

namespace fs = std::filesystem;
using namespace cm::training;

ImageU8 flat_image(int w, int h, int c, uint8_t value) {
  ImageU8 img;
  img.width = w;
  img.height = h;
  img.channels = c;
  img.pixels.assign(static_cast<size_t>(w) * h * c, value);
  return img;
}

class ImageFolder : public TempDirTest {};

TEST_F(ImageFolder, LabelsComeFromSortedSubFoldersAndBadFilesAreSkipped) {
  fs::create_directories(dir_ / "zebra");
  fs::create_directories(dir_ / "apple");
  write_png(path("apple/a.png"), flat_image(20, 10, 3, 255));   // resized, to gray
  write_jpeg(path("apple/b.JPG"), flat_image(16, 16, 1, 0));    // upper-case extension
  write_png(path("zebra/c.png"), flat_image(8, 8, 1, 51));
  std::ofstream(path("zebra/broken.png")) << "not a png";
  std::ofstream(path("zebra/notes.txt")) << "ignored: not an image name";
  const Dataset ds = load_image_folder(dir_.string(), 8, 1);
  ASSERT_EQ(ds.size(), 3u);
  EXPECT_EQ(ds.class_names, (std::vector<std::string>{"apple", "zebra"}));
  EXPECT_EQ(ds.images.sizes(), (at::IntArrayRef{3, 1, 8, 8}));
  EXPECT_EQ(ds.labels[0].item<int64_t>(), 0);
  EXPECT_EQ(ds.labels[1].item<int64_t>(), 0);
  EXPECT_EQ(ds.labels[2].item<int64_t>(), 1);
  EXPECT_NEAR(ds.images[0].min().item<float>(), 1.0, 1e-6);  // white stays white
  EXPECT_NEAR(ds.images[1].max().item<float>(), -1.0, 1e-6);  // black stays black
  EXPECT_NEAR(ds.images[2].mean().item<float>(), 51 / 127.5 - 1, 1e-6);
  ASSERT_EQ(ds.skipped.size(), 1u);
  EXPECT_NE(ds.skipped[0].find("broken.png"), std::string::npos) << ds.skipped[0];
}

TEST_F(ImageFolder, UnlabelledFolderColourAndLimit) {
  for (int i = 0; i < 4; ++i)
    write_png(path("img" + std::to_string(i) + ".png"), flat_image(4, 4, 1, 10 * i));
  const Dataset ds = load_image_folder(dir_.string(), 4, 3, /*limit=*/3);
  EXPECT_TRUE(ds.class_names.empty());
  EXPECT_EQ(ds.images.sizes(), (at::IntArrayRef{3, 3, 4, 4}));
  EXPECT_EQ(ds.labels.sum().item<int64_t>(), 0);
  EXPECT_NEAR(ds.images[2][1].mean().item<float>(), 20 / 127.5 - 1, 1e-6);
}

TEST_F(ImageFolder, EmptyOrMissingFolderIsAnErrorNamingIt) {
  fs::create_directories(dir_ / "empty");
  fs::create_directories(dir_ / "only_bad");
  std::ofstream(path("only_bad/x.jpg")) << "garbage";
  for (const std::string& d : {path("empty"), path("missing"), path("only_bad")}) {
    try {
      load_image_folder(d, 8, 1);
      ADD_FAILURE() << d;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(d), std::string::npos) << e.what();
    }
  }
}

TEST_F(ImageFolder, TrainsAClassConditionalModelWithTheFolderClassNames) {
  for (const char* c : {"circle", "square"}) {
    fs::create_directories(dir_ / "data" / c);
    for (int i = 0; i < 3; ++i)
      write_png(path(std::string("data/") + c + "/" + std::to_string(i) + ".png"),
                flat_image(12, 12, 3, static_cast<uint8_t>(40 * i + (c[0] == 's' ? 100 : 0))));
  }
  {
    std::ofstream broken(path("data/circle/broken.png"));
    broken << "not a PNG";
  }
  TrainOptions o;
  o.data = path("data");
  o.classes_from_data = true;
  o.output_dir = path("run");
  o.unet.sample_size = 8;
  o.unet.in_channels = o.unet.out_channels = 3;
  o.unet.block_out_channels = {8, 16};
  o.unet.down_block_types = {"DownBlock2D", "AttnDownBlock2D"};
  o.unet.up_block_types = {"AttnUpBlock2D", "UpBlock2D"};
  o.unet.attention_head_dim = 8;
  o.unet.norm_num_groups = 4;
  o.unet.layers_per_block = 1;
  o.total_steps = 2;
  o.batch_size = 2;
  o.checkpoint_every = o.sample_every = 0;
  // Notes come through the log callback (the library itself prints nothing).
  std::vector<std::string> lines;
  o.log = [&](const std::string& line) { lines.push_back(line); };
  train(o);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("broken.png"), std::string::npos) << lines[0];
  EXPECT_EQ(lines[1], "data: 1 unreadable file(s) skipped, 6 images used");
  const auto config = UNetConfig::load(path("run/checkpoint/unet/config.json"));
  ASSERT_TRUE(config.num_class_embeds.has_value());
  EXPECT_EQ(*config.num_class_embeds, 2);
  EXPECT_EQ(config.in_channels, 3);
  EXPECT_EQ(read_class_names(path("run/checkpoint")),
            (std::vector<std::string>{"circle", "square"}));
}

// RAdam, written out per element in double precision: the first steps use the un-rectified
// momentum update (ρt ≤ 5 while t < 6 with β2 = 0.999), the later ones the rectified one.
TEST(RAdamOptimizer, MatchesItsFormulaInBothRegimes) {
  const double lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.01;
  auto p = at::tensor({0.5, -1.0, 2.0}, at::kDouble).requires_grad_(true);
  RAdam opt({p}, torch::optim::AdamOptions(lr).betas({b1, b2}).eps(eps).weight_decay(wd));
  std::vector<double> x = {0.5, -1.0, 2.0}, m(3, 0), v(3, 0);
  const double rho_inf = 2 / (1 - b2) - 1;
  bool saw_plain = false, saw_rectified = false;
  for (int t = 1; t <= 9; ++t) {
    const std::vector<double> g0 = {0.3 * t, -0.2, std::sin(t)};
    p.mutable_grad() = at::tensor(g0, at::kDouble);
    opt.step();
    const double rho = rho_inf - 2 * t * std::pow(b2, t) / (1 - std::pow(b2, t));
    for (int i = 0; i < 3; ++i) {
      const double g = g0[i] + wd * x[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double mhat = m[i] / (1 - std::pow(b1, t));
      if (rho > 5) {
        const double r = std::sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho));
        x[i] -= lr * mhat * r * std::sqrt(1 - std::pow(b2, t)) / (std::sqrt(v[i]) + eps);
        saw_rectified = true;
      } else {
        x[i] -= lr * mhat;
        saw_plain = true;
      }
      EXPECT_NEAR(p[i].item<double>(), x[i], 1e-12) << "step " << t << " element " << i;
    }
  }
  EXPECT_TRUE(saw_plain && saw_rectified);
}

}  // namespace
}  // namespace cm::test
