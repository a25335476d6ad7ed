// `cm edit` run as a user would: each task's files, the kept pixels of an inpainting in the PNG
// itself, and a one-line error naming the file or value for each bad input.
#include <gtest/gtest.h>

#include "temp_dir_test.h"

#include <sys/wait.h>
#include <array>
#include <cstdio>
#include <filesystem>
#include <functional>

#include "cm/config.h"
#include "cm/image_io.h"
#include "run_cm.h"

namespace cm {
namespace {

namespace fs = std::filesystem;

using test::run_cm;
using test::RunResult;

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

ImageU8 picture(int w, int h, int c = 3) {
  return make_image(w, h, c, [](int x, int y, int ch) { return 20 + 5 * x + 3 * y + 40 * ch; });
}

// White = regenerate: a ring, black (keep) inside and outside it.
ImageU8 ring_mask(int size) {
  return make_image(size, size, 1, [size](int x, int y, int) {
    const int dx = x - size / 2, dy = y - size / 2, r2 = dx * dx + dy * dy;
    return (r2 > size * size / 36 && r2 < size * size / 9) ? 255 : 0;
  });
}

std::string parameters_of(const std::string& path) {
  TextChunks text;
  read_png(path, &text);
  for (const auto& [key, value] : text)
    if (key == "parameters") return value;
  return "";
}

const std::string kModel = CM_GOLDEN_DIR "/tiny_cond/model";
// One thread: these runs are tiny, and the machine may be busy.
const std::string kBase = "edit -m " + kModel + " -t 1 -q ";
const std::string kEdit = kBase + "--class 3 ";

class CliEdit : public test::TempDirTest {};

TEST_F(CliEdit, InpaintingKeepsTheBlackPixelsOfTheMask) {
  const ImageU8 ref = picture(32, 32);
  const ImageU8 mask = ring_mask(32);
  write_png(path("ref.png"), ref);
  write_png(path("mask.png"), mask);
  const auto r = run_cm(kEdit + "--task inpaint --image " + path("ref.png") + " --mask " +
                        path("mask.png") + " -s 1 --steps 4 -o " + path("out.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  const ImageU8 out = read_png(path("out.png"));
  ASSERT_EQ(out.width, 32);
  ASSERT_EQ(out.channels, 3);
  size_t kept_differ = 0, regenerated_differ = 0;
  for (size_t i = 0; i < out.pixels.size(); ++i) {
    const bool differ = out.pixels[i] != ref.pixels[i];
    (mask.pixels[i / 3] == 0 ? kept_differ : regenerated_differ) += differ;
  }
  EXPECT_EQ(kept_differ, 0u);
  EXPECT_GT(regenerated_differ, 0u);
  const std::string p = parameters_of(path("out.png"));
  for (const char* want : {"task: inpaint", "seed: 1", "steps: 4", "class: 3", "mask: "})
    EXPECT_NE(p.find(want), std::string::npos) << p;
}

TEST_F(CliEdit, GridShowsInputWhatTheModelSeesAndResults) {
  // A gray JPEG in, two colorizations out.
  write_jpeg(path("gray.jpg"), picture(32, 32, 1));
  const auto r = run_cm(kEdit + "--task colorize --image " + path("gray.jpg") +
                        " -s 2 --steps 3 -n 2 --grid -o " + path("grid.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  const ImageU8 grid = read_png(path("grid.png"));
  EXPECT_EQ(grid.width, 4 * 32);
  EXPECT_EQ(grid.height, 32);
  EXPECT_NE(parameters_of(path("grid.png")).find("task: colorize"), std::string::npos);
}

TEST_F(CliEdit, EveryTaskWritesItsImages) {
  write_png(path("low.png"), picture(8, 8));
  write_png(path("full.png"), picture(32, 32));
  struct Case {
    std::string args, file, param;
  };
  const std::vector<Case> cases = {
      {"--task superres --steps 3 --image " + path("low.png"), "sr_low.png", "factor: 4"},
      {"--task superres --steps 3 --image " + path("full.png") + " --factor 8", "sr_full.png",
       "factor: 8"},
      {"--task stroke --image " + path("full.png"), "stroke.png", "sigmas: 5.38,2.24"},
      {"--task denoise --image " + path("full.png") + " --sigma 0.5 --add-noise", "dn.png",
       "sigma: 0.5"},
      {"--task inpaint --image " + path("full.png") + " --mask " + path("full.png") +
           " --timesteps 30,10,0",
       "tsteps.png", "timesteps: 30,10,0"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const auto r = run_cm(kEdit + c.args + " -s 4 -o " + path(c.file));
    ASSERT_EQ(r.status, 0) << r.output;
    const ImageU8 out = read_png(path(c.file));
    EXPECT_EQ(out.width, 32);
    EXPECT_EQ(out.height, 32);
    const std::string p = parameters_of(path(c.file));
    EXPECT_NE(p.find(c.param), std::string::npos) << p;
  }
}

TEST_F(CliEdit, InterpolationFramesStartAndEndAtTheSeedsImages) {
  auto r = run_cm(kEdit + "--task interpolate --seed 1 --seed2 2 --frames 3 --steps 1 -o " +
                  path("f.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  for (int k = 0; k < 3; ++k) EXPECT_TRUE(fs::exists(path("f_" + std::to_string(k) + ".png")));
  EXPECT_NE(parameters_of(path("f_2.png")).find("frame: 2"), std::string::npos);
  for (auto [seed, frame] : {std::pair{1, 0}, std::pair{2, 2}}) {
    const std::string g = path("g" + std::to_string(seed) + ".png");
    r = run_cm("generate -m " + kModel + " -t 1 -q --class 3 --steps 1 -s " + std::to_string(seed) +
               " -o " + g);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_EQ(read_png(g).pixels, read_png(path("f_" + std::to_string(frame) + ".png")).pixels)
        << seed;
  }
  r = run_cm(kEdit + "--task interpolate --seed 1 --seed2 2 --frames 5 --steps 2 --grid -o " +
             path("grid.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(read_png(path("grid.png")).width, 5 * 32);
}

TEST_F(CliEdit, OtherSizesAreResizedWithANoteOrRejected) {
  write_png(path("big.png"), picture(48, 40));
  auto r =
      run_cm(kEdit + "--task stroke --image " + path("big.png") + " -s 1 -o " + path("out.png"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resizing " + path("big.png") + " from 48x40 to 32x32"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(read_png(path("out.png")).width, 32);
  r = run_cm(kEdit + "--task stroke --no-resize --image " + path("big.png") + " -s 1 -o " +
             path("bad.png"));
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find(path("big.png") + ": 48x40 is not the model's size 32x32"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(fs::exists(path("bad.png")));
}

TEST_F(CliEdit, BadInputsGiveOneLineErrors) {
  write_png(path("ref.png"), picture(32, 32));
  write_png(path("small_mask.png"), ring_mask(16));
  write_png(path("low12.png"), picture(12, 12));
  write_text_file(path("text.png"), "not an image at all");
  const std::string out = " -s 1 -o " + path("bad.png");
  const std::string ref = " --image " + path("ref.png");
  struct Case {
    std::string args, expect;
  };
  const std::vector<Case> cases = {
      {"--task inpaint" + ref + " --mask " + path("small_mask.png"),
       path("small_mask.png") + ": mask is 16x16 but " + path("ref.png") + " is 32x32"},
      {"--task stroke --image " + path("text.png"), path("text.png") + ": not a PNG or JPEG"},
      {"--task stroke --image " + path("missing.png"), path("missing.png") + ": cannot open"},
      {"--task inpaint" + ref + " --mask " + path("missing_mask.png"), path("missing_mask.png")},
      {"--task superres" + ref + " --factor 5", "--factor: 5 does not divide"},
      {"--task superres" + ref + " --factor 1", "--factor: must be at least 2"},
      {"--task superres" + ref + " --factor 0", "--factor: must be at least 2, got 0"},
      {"--task superres" + ref, path("ref.png") + ": 32x32 is the model's size already"},
      {"--task stroke" + ref + " --mask " + path("ref.png"),
       "--mask: only for --task inpaint, not stroke"},
      {"--task stroke" + ref + " --factor 2", "--factor: only for --task superres, not stroke"},
      {"--task inpaint" + ref + " --mask " + path("ref.png") + " --sigma 1",
       "--sigma: only for --task denoise, not inpaint"},
      {"--task colorize" + ref + " --add-noise", "--add-noise: only for --task denoise"},
      {"--task stroke" + ref + " --frames 3", "--frames: only for --task interpolate"},
      {"--task superres --image " + path("low12.png"),
       path("low12.png") + ": 12x12 does not divide the model's size 32x32"},
      {"--task paint" + ref, "task: unknown 'paint'"},
      {"--task stroke", "--image: required for stroke"},
      {"--task inpaint" + ref, "--mask: required for inpaint"},
      {"--task denoise" + ref, "--sigma: required for denoise"},
      {"--task denoise" + ref + " --sigma 500", "sigma: 500"},
      {"--task stroke" + ref + " --sigmas 1,3", "descending"},
      {"--task stroke" + ref + " --sigmas 1,x", "--sigmas: 'x'"},
      {"--task stroke" + ref + " --steps 0", "--steps"},
      {"--task interpolate --frames 0", "--frames"},
      {"--task stroke" + ref + " --class 1000", "out of range"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.args);
    const auto r = run_cm(kBase + c.args + out);
    EXPECT_EQ(r.status, 1) << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << r.output;
    EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
    const auto pos = r.output.find("error: ");
    ASSERT_NE(pos, std::string::npos) << r.output;
    const auto rest = r.output.substr(pos);
    EXPECT_EQ(std::count(rest.begin(), rest.end(), '\n'), 1) << r.output;
    EXPECT_FALSE(fs::exists(path("bad.png")));
  }
  const auto r = run_cm(kEdit + "--task stroke" + ref + " -s 1 -o " + path("x.jpg"));
  EXPECT_NE(r.output.find("--output: '" + path("x.jpg") + "' must end in .png, .npy or .npz"),
            std::string::npos)
      << r.output;
}

// -o x.npy and x.npz as in cm generate: the same images as the PNGs of the same edit.
TEST_F(CliEdit, ArraysHoldThePngsImages) {
  write_jpeg(path("gray.jpg"), picture(32, 32, 1));
  const std::string edit = kEdit + "--task colorize --image " + path("gray.jpg") + " -s 2 -n 2 ";
  ASSERT_EQ(run_cm(edit + "-o " + path("c.png")).status, 0);
  ASSERT_EQ(run_cm(edit + "-o " + path("c.npy")).status, 0);
  ASSERT_EQ(run_cm(edit + "-o " + path("c.npz")).status, 0);
  const NpyArray npy = read_npy(path("c.npy"));
  ASSERT_EQ(npy.shape, (std::vector<int64_t>{2, 32, 32, 3}));
  const auto npz = read_npz(path("c.npz"));
  ASSERT_EQ(npz.size(), 2u);  // arr_0 images, arr_1 labels
  ASSERT_EQ(npz[0].second.shape, npy.shape);
  const float* values = reinterpret_cast<const float*>(npy.data.data());
  for (int i = 0; i < 2; ++i) {
    const ImageU8 png = read_png(path("c_" + std::to_string(i) + ".png"));
    for (size_t k = 0; k < png.pixels.size(); ++k) {
      const size_t at = i * png.pixels.size() + k;
      ASSERT_EQ(npz[0].second.data[at], png.pixels[k]) << i << " " << k;
      ASSERT_NEAR(values[at] * 255, png.pixels[k], 0.5001) << i << " " << k;
    }
  }
  const auto r = run_cm(edit + "--grid -o " + path("g.npy"));
  EXPECT_NE(r.output.find("--grid"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace cm
