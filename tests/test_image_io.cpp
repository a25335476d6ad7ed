// PNG, .npy and .npz: round trips, the exact on-disk layout numpy expects, and malformed input.
#include <gtest/gtest.h>
#include <png.h>
#include <stdlib.h>
#include <zlib.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include "cm/error.h"
#include "cm/image_io.h"

namespace {

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

uint32_t le(const std::vector<uint8_t>& b, size_t at, int n) {
  uint32_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | b.at(at + i);
  return v;
}

// Runs `fn` and checks that it throws cm::Error whose message contains `needle`.
void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no cm::Error thrown; expected one containing " << needle;
  } catch (const cm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// Writes a PNG with libpng directly, for layouts write_png never produces. Only plain locals
// here, because libpng reports errors by longjmp.
bool write_raw_png(const char* path, png_uint_32 width, png_uint_32 height, int depth,
                   int color_type, int interlace, const png_color* palette, int num_palette,
                   const png_byte* trans, int num_trans, png_bytep* rows) {
  std::FILE* file = std::fopen(path, "wb");
  if (file == nullptr) return false;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png != nullptr ? png_create_info_struct(png) : nullptr;
  if (info == nullptr) {
    png_destroy_write_struct(&png, &info);
    std::fclose(file);
    return false;
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(file);
    return false;
  }
  png_init_io(png, file);
  png_set_IHDR(png, info, width, height, depth, color_type, interlace,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (num_palette > 0) png_set_PLTE(png, info, palette, num_palette);
  if (num_trans > 0) png_set_tRNS(png, info, trans, num_trans, nullptr);
  png_write_info(png, info);
  png_write_image(png, rows);
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return std::fclose(file) == 0;
}

std::vector<png_bytep> row_pointers(std::vector<uint8_t>& data, size_t height) {
  std::vector<png_bytep> rows(height);
  for (size_t y = 0; y < height; ++y) rows[y] = data.data() + y * (data.size() / height);
  return rows;
}

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cm_image_io_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }
  size_t file_count() const {
    return static_cast<size_t>(std::distance(std::filesystem::directory_iterator(dir_),
                                             std::filesystem::directory_iterator()));
  }
  std::string dir_;
};

class PngTest : public TempDirTest {};
class NpyTest : public TempDirTest {};
class NpzTest : public TempDirTest {};

cm::ImageU8 make_image(int width, int height, int channels) {
  cm::ImageU8 image{width, height, channels, {}};
  for (int i = 0; i < width * height * channels; ++i)
    image.pixels.push_back(static_cast<uint8_t>((i * 37 + i / 7) & 0xff));
  return image;
}

TEST_F(PngTest, RoundTripGrayRgbRgbaWithText) {
  const cm::TextChunks text = {
      {"parameters", "a photo of a cat, best quality\nSteps: 1, Sampler: CMStochastic, Seed: 42"},
      {"Software", "consistency.cpp"}};
  for (int channels : {1, 3, 4}) {
    const cm::ImageU8 image = make_image(17, 9, channels);
    const std::string file = path("image" + std::to_string(channels) + ".png");
    cm::write_png(file, image, text);
    cm::TextChunks read_text;
    const cm::ImageU8 back = cm::read_png(file, &read_text);
    EXPECT_EQ(back.width, 17);
    EXPECT_EQ(back.height, 9);
    EXPECT_EQ(back.channels, channels);
    EXPECT_EQ(back.pixels, image.pixels);
    EXPECT_EQ(read_text, text);
  }
  EXPECT_EQ(file_count(), 3u);  // no temporary files left behind
}

TEST_F(PngTest, SixteenBitInterlacedRgbReadsAsEightBit) {
  const int width = 5, height = 4;
  std::vector<uint8_t> data, expected;
  for (int i = 0; i < width * height * 3; ++i) {
    const uint8_t v = static_cast<uint8_t>(i * 11 + (i == 0 ? 255 : 0));
    data.insert(data.end(), {v, v});  // big-endian v * 257 scales back to exactly v
    expected.push_back(v);
  }
  auto rows = row_pointers(data, height);
  ASSERT_TRUE(write_raw_png(path("rgb16.png").c_str(), width, height, 16, PNG_COLOR_TYPE_RGB,
                            PNG_INTERLACE_ADAM7, nullptr, 0, nullptr, 0, rows.data()));
  const cm::ImageU8 image = cm::read_png(path("rgb16.png"));
  EXPECT_EQ(image.width, width);
  EXPECT_EQ(image.height, height);
  EXPECT_EQ(image.channels, 3);
  EXPECT_EQ(image.pixels, expected);
}

TEST_F(PngTest, PaletteWithTransparencyReadsAsRgba) {
  const png_color palette[4] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {10, 20, 30}};
  const png_byte trans[2] = {0, 128};
  // 2 bits per pixel, 6 pixels per row: indices 0 1 2 3 2 1 and 3 3 0 0 1 2.
  std::vector<uint8_t> data = {0b00011011, 0b10010000, 0b11110000, 0b01100000};
  auto rows = row_pointers(data, 2);
  ASSERT_TRUE(write_raw_png(path("palette.png").c_str(), 6, 2, 2, PNG_COLOR_TYPE_PALETTE,
                            PNG_INTERLACE_NONE, palette, 4, trans, 2, rows.data()));
  const cm::ImageU8 image = cm::read_png(path("palette.png"));
  ASSERT_EQ(image.channels, 4);
  const int indices[12] = {0, 1, 2, 3, 2, 1, 3, 3, 0, 0, 1, 2};
  std::vector<uint8_t> expected;
  for (int index : indices) {
    const png_color& c = palette[index];
    const png_byte alpha = index < 2 ? trans[index] : 255;
    expected.insert(expected.end(), {c.red, c.green, c.blue, alpha});
  }
  EXPECT_EQ(image.pixels, expected);
}

TEST_F(PngTest, GrayAlphaReadsAsRgbaAndOneBitGrayAsEightBit) {
  std::vector<uint8_t> ga = {10, 200, 20, 100, 30, 0};
  auto ga_rows = row_pointers(ga, 1);
  ASSERT_TRUE(write_raw_png(path("ga.png").c_str(), 3, 1, 8, PNG_COLOR_TYPE_GRAY_ALPHA,
                            PNG_INTERLACE_NONE, nullptr, 0, nullptr, 0, ga_rows.data()));
  const cm::ImageU8 rgba = cm::read_png(path("ga.png"));
  EXPECT_EQ(rgba.channels, 4);
  EXPECT_EQ(rgba.pixels, (std::vector<uint8_t>{10, 10, 10, 200, 20, 20, 20, 100, 30, 30, 30, 0}));

  std::vector<uint8_t> bits = {0b10100000};
  auto bit_rows = row_pointers(bits, 1);
  ASSERT_TRUE(write_raw_png(path("bits.png").c_str(), 3, 1, 1, PNG_COLOR_TYPE_GRAY,
                            PNG_INTERLACE_NONE, nullptr, 0, nullptr, 0, bit_rows.data()));
  const cm::ImageU8 gray = cm::read_png(path("bits.png"));
  EXPECT_EQ(gray.channels, 1);
  EXPECT_EQ(gray.pixels, (std::vector<uint8_t>{255, 0, 255}));
}

TEST_F(PngTest, NotAPngAndTruncatedPngThrowWithPath) {
  write_bytes(path("text.png"), {'h', 'e', 'l', 'l', 'o', ',', ' ', 'n', 'o', 't', ' ', 'P'});
  expect_error([&] { cm::read_png(path("text.png")); }, path("text.png"));
  expect_error([&] { cm::read_png(path("missing.png")); }, path("missing.png"));

  cm::write_png(path("full.png"), make_image(64, 64, 3), {{"parameters", "x"}});
  std::vector<uint8_t> bytes = read_bytes(path("full.png"));
  for (size_t keep : {size_t{12}, size_t{40}, bytes.size() / 2, bytes.size() - 12}) {
    write_bytes(path("cut.png"), std::vector<uint8_t>(bytes.begin(), bytes.begin() + keep));
    expect_error([&] { cm::read_png(path("cut.png")); }, path("cut.png"));
  }
}

// A chunk whose length field claims more than the file holds is refused before libpng would
// allocate that much (a 100-byte file once made it allocate 1.9 GB; found by fuzzing).
TEST_F(PngTest, ChunkLongerThanTheFileIsRefusedUpFront) {
  const std::vector<uint8_t> good = cm::encode_png(make_image(3, 2, 3), {{"parameters", "x"}});
  const size_t text_at = 8 + 12 + 13;  // signature, then IHDR; the tEXt chunk's length next
  ASSERT_EQ(std::string(good.begin() + text_at + 4, good.begin() + text_at + 8), "tEXt");
  std::vector<uint8_t> bad = good;
  bad[text_at] = 0x74;  // 0x7400000c bytes
  try {
    cm::decode_png(bad, nullptr, "huge.png");
    FAIL() << "accepted";
  } catch (const cm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("huge.png: invalid PNG: chunk 'tEXt' at byte 33 claims "
                                         "1946157068 bytes"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(cm::decode_png(good).width, 3);
}

TEST_F(PngTest, WriteRejectsBadImagesAndLeavesNoFile) {
  cm::ImageU8 image = make_image(4, 3, 3);
  image.pixels.pop_back();
  expect_error([&] { cm::write_png(path("bad.png"), image); }, path("bad.png"));
  expect_error([&] { cm::write_png(path("bad.png"), make_image(4, 3, 2)); }, path("bad.png"));
  expect_error([&] { cm::write_png(path("bad.png"), cm::ImageU8{0, 3, 3, {}}); }, "bad.png");
  expect_error([&] { cm::write_png(path("bad.png"), make_image(2, 2, 1), {{"", "x"}}); },
               "keyword");
  EXPECT_EQ(file_count(), 0u);
}

cm::NpyArray make_f4_array() {
  cm::NpyArray array{"<f4", {2, 3, 4}, {}};
  for (int i = 0; i < 24; ++i) {
    const float v = 0.25f * static_cast<float>(i) - 3.0f;
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    array.data.insert(array.data.end(), p, p + sizeof v);
  }
  return array;
}

TEST_F(NpyTest, RoundTripFloat32WithNumpyHeader) {
  const cm::NpyArray array = make_f4_array();
  cm::write_npy(path("a.npy"), array);
  const cm::NpyArray back = cm::read_npy(path("a.npy"));
  EXPECT_EQ(back.descr, "<f4");
  EXPECT_EQ(back.shape, array.shape);
  EXPECT_EQ(back.data, array.data);

  const std::vector<uint8_t> bytes = read_bytes(path("a.npy"));
  ASSERT_GE(bytes.size(), 10u);
  EXPECT_EQ(std::string(bytes.begin(), bytes.begin() + 8), std::string("\x93NUMPY\x01\x00", 8));
  const size_t header = 10 + le(bytes, 8, 2);
  EXPECT_EQ(header % 64, 0u);
  EXPECT_EQ(header, 128u);  // what numpy >= 1.20 writes for this shape (growth-axis padding)
  EXPECT_EQ(bytes[header - 1], '\n');
  EXPECT_EQ(bytes.size(), header + 96);
  const std::string dict(bytes.begin() + 10, bytes.begin() + header);
  EXPECT_EQ(dict.rfind("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4), }", 0), 0u);
}

TEST_F(NpyTest, RoundTripUint8OneDimAndScalar) {
  const cm::NpyArray vec{"|u1", {5}, {1, 2, 3, 250, 255}};
  cm::write_npy(path("v.npy"), vec);
  const cm::NpyArray back = cm::read_npy(path("v.npy"));
  EXPECT_EQ(back.descr, "|u1");
  EXPECT_EQ(back.shape, vec.shape);
  EXPECT_EQ(back.data, vec.data);
  const std::vector<uint8_t> bytes = read_bytes(path("v.npy"));
  EXPECT_EQ((10 + le(bytes, 8, 2)) % 64, 0u);
  EXPECT_NE(std::string(bytes.begin(), bytes.end()).find("'shape': (5,), }"), std::string::npos);

  cm::write_npy(path("s.npy"), cm::NpyArray{"|b1", {}, {1}});
  const std::vector<uint8_t> scalar = read_bytes(path("s.npy"));
  EXPECT_NE(std::string(scalar.begin(), scalar.end()).find("'shape': (), }"), std::string::npos);
  EXPECT_TRUE(cm::read_npy(path("s.npy")).shape.empty());
}

TEST_F(NpyTest, MalformedInputThrows) {
  write_bytes(path("magic.npy"), {0x93, 'N', 'U', 'M', 'P', 'X', 1, 0, 0, 0});
  expect_error([&] { cm::read_npy(path("magic.npy")); }, path("magic.npy"));
  write_bytes(path("empty.npy"), {});
  expect_error([&] { cm::read_npy(path("empty.npy")); }, path("empty.npy"));

  cm::write_npy(path("short.npy"), make_f4_array());
  std::vector<uint8_t> bytes = read_bytes(path("short.npy"));
  const std::vector<uint8_t> full = bytes;
  bytes.resize(bytes.size() - 4);
  write_bytes(path("short.npy"), bytes);
  expect_error([&] { cm::read_npy(path("short.npy")); }, "needs 96");
  // A header length pointing past the end of the file, and a cut-off header dict.
  bytes = full;
  bytes[8] = 0xff, bytes[9] = 0xff;
  write_bytes(path("long.npy"), bytes);
  expect_error([&] { cm::read_npy(path("long.npy")); }, path("long.npy"));
  bytes = full;
  bytes[20] = '}';
  write_bytes(path("dict.npy"), bytes);
  expect_error([&] { cm::read_npy(path("dict.npy")); }, path("dict.npy"));

  expect_error([&] { cm::write_npy(path("w.npy"), cm::NpyArray{"<U10", {1}, {}}); }, "'<U10'");
  expect_error([&] { cm::write_npy(path("w.npy"), cm::NpyArray{"<f4", {2}, {0, 0, 0, 0}}); },
               path("w.npy"));
  EXPECT_FALSE(std::filesystem::exists(path("w.npy")));
}

std::vector<std::pair<std::string, cm::NpyArray>> make_npz_arrays() {
  cm::NpyArray images{"|u1", {2, 4, 4, 3}, {}};
  for (int i = 0; i < 2 * 4 * 4 * 3; ++i) images.data.push_back(static_cast<uint8_t>(i * 5));
  cm::NpyArray labels{"<i8", {2}, std::vector<uint8_t>(16, 0)};
  labels.data[0] = 7;
  labels.data[8] = 0xfe, labels.data[15] = 0x01;
  return {{"arr_0", images}, {"arr_1", labels}};
}

TEST_F(NpzTest, RoundTripTwoArraysWithValidZip) {
  const auto arrays = make_npz_arrays();
  cm::write_npz(path("a.npz"), arrays);
  const auto back = cm::read_npz(path("a.npz"));
  ASSERT_EQ(back.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(back[i].first, arrays[i].first);
    EXPECT_EQ(back[i].second.descr, arrays[i].second.descr);
    EXPECT_EQ(back[i].second.shape, arrays[i].second.shape);
    EXPECT_EQ(back[i].second.data, arrays[i].second.data);
  }

  // Walk the central directory by hand: every member is a stored, CRC-correct .npy file
  // identical to what write_npy produces.
  const std::vector<uint8_t> zip = read_bytes(path("a.npz"));
  ASSERT_GE(zip.size(), 22u);
  EXPECT_EQ(std::string(zip.begin(), zip.begin() + 4), "PK\x03\x04");
  const size_t end = zip.size() - 22;
  ASSERT_EQ(le(zip, end, 4), 0x06054b50u);
  ASSERT_EQ(le(zip, end + 10, 2), 2u);
  size_t at = le(zip, end + 16, 4);
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_EQ(le(zip, at, 4), 0x02014b50u);
    EXPECT_EQ(le(zip, at + 10, 2), 0u);  // stored
    const uint32_t crc = le(zip, at + 16, 4), size = le(zip, at + 24, 4);
    const uint32_t name_len = le(zip, at + 28, 2), local = le(zip, at + 42, 4);
    EXPECT_EQ(std::string(zip.begin() + at + 46, zip.begin() + at + 46 + name_len),
              arrays[i].first + ".npy");
    ASSERT_EQ(le(zip, local, 4), 0x04034b50u);
    const size_t data = local + 30 + le(zip, local + 26, 2) + le(zip, local + 28, 2);
    ASSERT_LE(data + size, zip.size());
    EXPECT_EQ(crc32(0L, zip.data() + data, size), crc);
    cm::write_npy(path("member.npy"), arrays[i].second);
    EXPECT_EQ(std::vector<uint8_t>(zip.begin() + data, zip.begin() + data + size),
              read_bytes(path("member.npy")));
    at += 46 + name_len + le(zip, at + 30, 2) + le(zip, at + 32, 2);
  }
  EXPECT_EQ(at, end);
}

TEST_F(NpzTest, CorruptArchivesThrow) {
  cm::write_npz(path("a.npz"), make_npz_arrays());
  const std::vector<uint8_t> zip = read_bytes(path("a.npz"));
  std::vector<uint8_t> bad = zip;
  bad[200] ^= 0x55;  // inside arr_0's data
  write_bytes(path("crc.npz"), bad);
  expect_error([&] { cm::read_npz(path("crc.npz")); }, "CRC");
  for (size_t keep : {size_t{0}, size_t{10}, zip.size() / 2, zip.size() - 1}) {
    write_bytes(path("cut.npz"), std::vector<uint8_t>(zip.begin(), zip.begin() + keep));
    expect_error([&] { cm::read_npz(path("cut.npz")); }, path("cut.npz"));
  }
  const cm::NpyArray one{"|u1", {1}, {0}};
  expect_error([&] { cm::write_npz(path("dup.npz"), {{"x", one}, {"x", one}}); }, "duplicate");
}

}  // namespace
