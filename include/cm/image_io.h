// Image and array files: PNG (with tEXt metadata), NumPy .npy and .npz. Torch-free.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cm {

// 8-bit pixels, rows top to bottom, channels interleaved (1 = gray, 3 = RGB, 4 = RGBA).
struct ImageU8 {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels
};

using TextChunks = std::vector<std::pair<std::string, std::string>>;

// Writes a PNG with one tEXt chunk per (keyword, text) pair; temporary file then rename.
void write_png(const std::string& path, const ImageU8& image, const TextChunks& text = {});
// Reads an 8-bit or 16-bit PNG of any colour type into 8-bit gray, RGB or RGBA (palette and
// 16-bit are converted). `text`, when given, receives the tEXt chunks.
ImageU8 read_png(const std::string& path, TextChunks* text = nullptr);

// A NumPy array: dtype descr as NumPy writes it ("<f4", "|u1", "<i8", ...), C order.
struct NpyArray {
  std::string descr;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

void write_npy(const std::string& path, const NpyArray& array);
NpyArray read_npy(const std::string& path);
// An uncompressed .npz (a zip of NAME.npy members), as numpy.savez writes it.
void write_npz(const std::string& path, const std::vector<std::pair<std::string, NpyArray>>& arrays);
std::vector<std::pair<std::string, NpyArray>> read_npz(const std::string& path);

}  // namespace cm
