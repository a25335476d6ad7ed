#include <cmath>
#include <cstring>

#include "cm/error.h"
#include "cm/output.h"

namespace cm {

at::Tensor images_to_uint8(const at::Tensor& images) {
  return (images.to(at::kCPU, at::kFloat) * 255).round().clamp(0, 255).to(at::kByte).contiguous();
}

std::vector<ImageU8> to_uint8_images(const at::Tensor& images) {
  TORCH_CHECK(images.dim() == 4, "images must be [B, H, W, C]");
  const auto bytes = images_to_uint8(images);
  std::vector<ImageU8> out;
  const int64_t b = bytes.size(0), h = bytes.size(1), w = bytes.size(2), c = bytes.size(3);
  const uint8_t* p = bytes.data_ptr<uint8_t>();
  for (int64_t i = 0; i < b; ++i) {
    ImageU8 img;
    img.width = static_cast<int>(w);
    img.height = static_cast<int>(h);
    img.channels = static_cast<int>(c);
    img.pixels.assign(p + i * h * w * c, p + (i + 1) * h * w * c);
    out.push_back(std::move(img));
  }
  return out;
}

ImageU8 make_grid(const std::vector<ImageU8>& images, int columns) {
  if (images.empty()) throw Error("make_grid: no images");
  const int n = static_cast<int>(images.size());
  if (columns <= 0) columns = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n))));
  columns = std::min(columns, n);
  const int rows = (n + columns - 1) / columns;
  const ImageU8& first = images.front();
  ImageU8 grid;
  grid.width = first.width * columns;
  grid.height = first.height * rows;
  grid.channels = first.channels;
  grid.pixels.assign(static_cast<size_t>(grid.width) * grid.height * grid.channels, 0);
  const size_t row_bytes = static_cast<size_t>(first.width) * first.channels;
  for (int i = 0; i < n; ++i) {
    const ImageU8& img = images[i];
    const int gx = (i % columns) * first.width, gy = (i / columns) * first.height;
    for (int y = 0; y < first.height; ++y) {
      std::memcpy(&grid.pixels[((static_cast<size_t>(gy) + y) * grid.width + gx) * grid.channels],
                  &img.pixels[y * row_bytes], row_bytes);
    }
  }
  return grid;
}

NpyArray images_to_npy(const at::Tensor& images) {
  const auto f = images.to(at::kCPU, at::kFloat).contiguous();
  NpyArray a;
  a.descr = "<f4";
  a.shape = f.sizes().vec();
  a.data.resize(f.numel() * sizeof(float));
  std::memcpy(a.data.data(), f.data_ptr<float>(), a.data.size());
  return a;
}

void write_samples_npz(const std::string& path, const at::Tensor& images,
                       const std::vector<int64_t>& labels) {
  const auto bytes = images_to_uint8(images);
  NpyArray arr0;
  arr0.descr = "|u1";
  arr0.shape = bytes.sizes().vec();
  arr0.data.assign(bytes.data_ptr<uint8_t>(), bytes.data_ptr<uint8_t>() + bytes.numel());
  std::vector<std::pair<std::string, NpyArray>> arrays{{"arr_0", std::move(arr0)}};
  if (!labels.empty()) {
    NpyArray arr1;
    arr1.descr = "<i8";
    arr1.shape = {static_cast<int64_t>(labels.size())};
    arr1.data.resize(labels.size() * sizeof(int64_t));
    std::memcpy(arr1.data.data(), labels.data(), arr1.data.size());
    arrays.emplace_back("arr_1", std::move(arr1));
  }
  write_npz(path, arrays);
}

}  // namespace cm
