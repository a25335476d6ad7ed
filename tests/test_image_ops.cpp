// JPEG reading and writing, read_image's format detection, resizing and channel conversion.
#include <gtest/gtest.h>

#include "temp_dir_test.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "cm/config.h"
#include "cm/error.h"
#include "cm/image_io.h"

namespace cm {
namespace {

namespace fs = std::filesystem;

void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no cm::Error thrown; expected one containing " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

ImageU8 make_image(int w, int h, int c, const std::function<uint8_t(int, int, int)>& f) {
  ImageU8 img;
  img.width = w;
  img.height = h;
  img.channels = c;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int ch = 0; ch < c; ++ch) img.pixels.push_back(f(x, y, ch));
  return img;
}

int max_diff(const ImageU8& a, const ImageU8& b) {
  int d = 0;
  for (size_t i = 0; i < a.pixels.size(); ++i) d = std::max(d, std::abs(a.pixels[i] - b.pixels[i]));
  return d;
}

class ImageOps : public test::TempDirTest {};

TEST_F(ImageOps, JpegRoundTripsRgbAndGray) {
  // Smooth content, so that quality 100 comes back within a few levels.
  const auto rgb =
      make_image(40, 24, 3, [](int x, int y, int c) { return 20 + 3 * x + 2 * y + 20 * c; });
  write_jpeg(path("rgb.jpg"), rgb, 100);
  const ImageU8 back = read_jpeg(path("rgb.jpg"));
  ASSERT_EQ(back.width, 40);
  ASSERT_EQ(back.height, 24);
  ASSERT_EQ(back.channels, 3);
  EXPECT_LE(max_diff(back, rgb), 6);

  const auto gray = make_image(17, 9, 1, [](int x, int y, int) { return 10 * x + y; });
  write_jpeg(path("gray.jpg"), gray, 100);
  const ImageU8 g = read_image(path("gray.jpg"));
  ASSERT_EQ(g.channels, 1);
  ASSERT_EQ(g.width, 17);
  EXPECT_LE(max_diff(g, gray), 3);
}

TEST_F(ImageOps, ReadImageGoesByContentNotName) {
  const auto img = make_image(5, 4, 3, [](int x, int y, int c) { return x * 50 + y + c; });
  write_png(path("really_png.jpg"), img);
  const ImageU8 back = read_image(path("really_png.jpg"));
  EXPECT_EQ(back.pixels, img.pixels);
  write_jpeg(path("really_jpeg.png"), img);
  EXPECT_EQ(read_image(path("really_jpeg.png")).width, 5);
}

TEST_F(ImageOps, UnreadableFilesNameThePath) {
  write_text_file(path("text.png"), "hello, not an image");
  expect_error([&] { read_image(path("text.png")); }, "text.png: not a PNG or JPEG image");
  expect_error([&] { read_image(path("missing.png")); }, "missing.png: cannot open");
  expect_error([&] { read_jpeg(path("text.png")); }, "text.png: not a JPEG file");
  expect_error([&] { read_image(dir_.string()); }, "is a directory");

  const auto img = make_image(64, 64, 3, [](int x, int y, int c) { return (x * y + c) & 255; });
  write_jpeg(path("full.jpg"), img);
  const std::string bytes = read_text_file(path("full.jpg"));
  write_text_file(path("cut.jpg"), bytes.substr(0, bytes.size() / 2));
  expect_error([&] { read_image(path("cut.jpg")); }, "cut.jpg: invalid JPEG");
  write_text_file(path("head.jpg"), bytes.substr(0, 40));
  expect_error([&] { read_image(path("head.jpg")); }, "head.jpg: invalid JPEG");
  expect_error([&] { write_jpeg(path("x.jpg"), img, 0); }, "quality");
}

TEST(Resize, SameSizeIsTheIdentityAndConstantsStayConstant) {
  const auto img = make_image(7, 5, 3, [](int x, int y, int c) { return x * 30 + y * 7 + c; });
  EXPECT_EQ(resize_image(img, 7, 5).pixels, img.pixels);
  const auto flat = make_image(13, 11, 1, [](int, int, int) { return 201; });
  for (auto [w, h] : {std::pair{5, 3}, std::pair{26, 40}, std::pair{13, 2}, std::pair{1, 1}}) {
    const ImageU8 r = resize_image(flat, w, h);
    ASSERT_EQ(r.width, w);
    ASSERT_EQ(r.height, h);
    for (uint8_t v : r.pixels) EXPECT_EQ(v, 201);
  }
}

TEST(Resize, HalvingAveragesTwoByTwoBlocks) {
  const auto img = make_image(8, 6, 1, [](int x, int y, int) { return (x * 37 + y * 91) % 256; });
  const ImageU8 r = resize_image(img, 4, 3);
  for (int y = 0; y < 3; ++y) {
    for (int x = 0; x < 4; ++x) {
      const auto at = [&](int xx, int yy) { return img.pixels[yy * 8 + xx]; };
      const double mean = (at(2 * x, 2 * y) + at(2 * x + 1, 2 * y) + at(2 * x, 2 * y + 1) +
                           at(2 * x + 1, 2 * y + 1)) /
                          4.0;
      EXPECT_NEAR(r.pixels[y * 4 + x], mean, 0.5 + 1e-4) << x << "," << y;
    }
  }
}

TEST(Resize, DoublingInterpolatesBetweenCentres) {
  // A ramp 0, 100 doubles to 0, 25, 75, 100: bilinear at the centres, clamped at the edges.
  const auto img = make_image(2, 1, 1, [](int x, int, int) { return x * 100; });
  const ImageU8 r = resize_image(img, 4, 1);
  EXPECT_EQ(r.pixels, (std::vector<uint8_t>{0, 25, 75, 100}));
  expect_error([&] { resize_image(img, 0, 3); }, "0x3");
}

TEST(ConvertChannels, GrayRgbAndAlpha) {
  const auto gray = make_image(2, 2, 1, [](int x, int y, int) { return 10 + x + 2 * y; });
  const ImageU8 rgb = convert_channels(gray, 3);
  ASSERT_EQ(rgb.channels, 3);
  EXPECT_EQ(rgb.pixels[3], 11);
  EXPECT_EQ(rgb.pixels[4], 11);
  EXPECT_EQ(convert_channels(rgb, 1).pixels, gray.pixels);
  const auto rgba = make_image(1, 1, 4, [](int, int, int c) {
    return std::array<int, 4>{255, 0, 0, 7}[c];
  });
  EXPECT_EQ(convert_channels(rgba, 3).pixels, (std::vector<uint8_t>{255, 0, 0}));
  EXPECT_EQ(convert_channels(rgba, 1).pixels, (std::vector<uint8_t>{76}));  // 0.2989 * 255
  expect_error([&] { convert_channels(gray, 2); }, "1 or 3");
}

}  // namespace
}  // namespace cm
