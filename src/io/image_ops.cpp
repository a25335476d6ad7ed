// Reading an image whatever its format, resizing it and changing its channel count: what a
// reference image for editing (or a training image) needs before it meets a model. Torch-free.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cm/error.h"
#include "cm/image_io.h"

namespace cm {
namespace {

// One output position along an axis: the source indices it reads and their weights (sum 1).
struct Taps {
  std::vector<int> index;
  std::vector<float> weight;
};

// Area averaging when the axis shrinks (each output pixel averages the source pixels it covers,
// in fractions at its edges), bilinear between pixel centres when it grows or stays, which makes
// an equal size the identity.
std::vector<Taps> axis_taps(int src, int dst) {
  std::vector<Taps> taps(dst);
  const double scale = static_cast<double>(src) / dst;
  for (int i = 0; i < dst; ++i) {
    Taps& t = taps[i];
    if (dst < src) {
      const double begin = i * scale, end = (i + 1) * scale;
      for (int j = static_cast<int>(std::floor(begin)); j < std::min<double>(src, end); ++j) {
        const double overlap = std::min<double>(j + 1, end) - std::max<double>(j, begin);
        if (overlap <= 0) continue;
        t.index.push_back(j);
        t.weight.push_back(static_cast<float>(overlap / scale));
      }
    } else {
      const double x = std::clamp((i + 0.5) * scale - 0.5, 0.0, src - 1.0);
      const int j0 = static_cast<int>(std::floor(x));
      const int j1 = std::min(j0 + 1, src - 1);
      const double w = x - j0;
      t.index = {j0, j1};
      t.weight = {static_cast<float>(1 - w), static_cast<float>(w)};
    }
  }
  return taps;
}

void check_image(const ImageU8& image, const std::string& what) {
  if (image.width <= 0 || image.height <= 0 || image.channels <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * image.channels)
    throw Error(what + ": invalid image (" + std::to_string(image.width) + "x" +
                std::to_string(image.height) + "x" + std::to_string(image.channels) + ", " +
                std::to_string(image.pixels.size()) + " bytes)");
}

}  // namespace

ImageU8 read_image(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) throw Error(path + ": is a directory, not an image");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open file");
  unsigned char head[8] = {};
  in.read(reinterpret_cast<char*>(head), sizeof head);
  const auto got = in.gcount();
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (got == 8 && std::equal(head, head + 8, kPng)) return read_png(path);
  if (got >= 3 && head[0] == 0xFF && head[1] == 0xD8 && head[2] == 0xFF) return read_jpeg(path);
  throw Error(path + ": not a PNG or JPEG image");
}

ImageU8 decode_image(const std::vector<uint8_t>& bytes, const std::string& name) {
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (bytes.size() >= 8 && std::equal(bytes.begin(), bytes.begin() + 8, kPng))
    return decode_png(bytes, nullptr, name);
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
    return decode_jpeg(bytes, name);
  throw Error(name + ": not a PNG or JPEG image");
}

ImageU8 resize_image(const ImageU8& image, int width, int height) {
  check_image(image, "resize");
  if (width <= 0 || height <= 0)
    throw Error("resize: invalid target size " + std::to_string(width) + "x" +
                std::to_string(height));
  const int c = image.channels;
  const auto across = axis_taps(image.width, width);
  const auto down = axis_taps(image.height, height);
  // Rows first (source height x target width), then columns, in float.
  std::vector<float> rows(static_cast<size_t>(image.height) * width * c);
  for (int y = 0; y < image.height; ++y) {
    const uint8_t* src = image.pixels.data() + static_cast<size_t>(y) * image.width * c;
    float* dst = rows.data() + static_cast<size_t>(y) * width * c;
    for (int x = 0; x < width; ++x) {
      for (size_t k = 0; k < across[x].index.size(); ++k) {
        const uint8_t* p = src + static_cast<size_t>(across[x].index[k]) * c;
        for (int ch = 0; ch < c; ++ch) dst[x * c + ch] += across[x].weight[k] * p[ch];
      }
    }
  }
  ImageU8 out;
  out.width = width;
  out.height = height;
  out.channels = c;
  out.pixels.resize(static_cast<size_t>(width) * height * c);
  std::vector<float> acc(static_cast<size_t>(width) * c);
  for (int y = 0; y < height; ++y) {
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (size_t k = 0; k < down[y].index.size(); ++k) {
      const float* src = rows.data() + static_cast<size_t>(down[y].index[k]) * width * c;
      for (size_t i = 0; i < acc.size(); ++i) acc[i] += down[y].weight[k] * src[i];
    }
    uint8_t* dst = out.pixels.data() + static_cast<size_t>(y) * width * c;
    for (size_t i = 0; i < acc.size(); ++i)
      dst[i] = static_cast<uint8_t>(std::lround(std::clamp(acc[i], 0.0f, 255.0f)));
  }
  return out;
}

ImageU8 convert_channels(const ImageU8& image, int channels) {
  check_image(image, "convert_channels");
  const int c = image.channels;
  if (c != 1 && c != 3 && c != 4)
    throw Error("convert_channels: images have 1, 3 or 4 channels, got " + std::to_string(c));
  if (channels != 1 && channels != 3)
    throw Error("convert_channels: can make 1 or 3 channels, not " + std::to_string(channels));
  if (c == channels) return image;
  ImageU8 out;
  out.width = image.width;
  out.height = image.height;
  out.channels = channels;
  const size_t n = static_cast<size_t>(image.width) * image.height;
  out.pixels.resize(n * channels);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* p = image.pixels.data() + i * c;
    uint8_t* q = out.pixels.data() + i * channels;
    if (channels == 3) {
      for (int ch = 0; ch < 3; ++ch) q[ch] = c == 1 ? p[0] : p[ch];  // gray repeated; alpha dropped
    } else {
      q[0] = static_cast<uint8_t>(
          std::lround(std::min(255.0, 0.2989 * p[0] + 0.5870 * p[1] + 0.1140 * p[2])));
    }
  }
  return out;
}

}  // namespace cm
