// Image and array files: PNG (with tEXt metadata), JPEG, NumPy .npy and .npz, and the resizing
// and channel conversion input images need. Torch-free.
#pragma once

#include <cstdint>
#include <memory>
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
// The same in memory (an HTTP response or request); `name` is what error messages call it.
std::vector<uint8_t> encode_png(const ImageU8& image, const TextChunks& text = {},
                                const std::string& name = "PNG");
ImageU8 decode_png(const std::vector<uint8_t>& bytes, TextChunks* text = nullptr,
                   const std::string& name = "PNG");

// A baseline or progressive JPEG as 8-bit gray or RGB (CMYK and truncated files are errors).
ImageU8 read_jpeg(const std::string& path);
// Gray or RGB at the given quality (1-100); temporary file then rename.
void write_jpeg(const std::string& path, const ImageU8& image, int quality = 95);
// The same in memory; `name` is what error messages call it.
ImageU8 decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& name = "JPEG");
// A PNG or a JPEG, told apart by the file's first bytes rather than its name.
ImageU8 read_image(const std::string& path);
ImageU8 decode_image(const std::vector<uint8_t>& bytes, const std::string& name = "image");
// Resampled to width x height: area averaging along an axis that shrinks, bilinear between pixel
// centres (edges clamped) along one that grows; an unchanged size is the identity.
ImageU8 resize_image(const ImageU8& image, int width, int height);
// To 1 or 3 channels: gray is repeated, colour becomes the luminance 0.2989 R + 0.5870 G +
// 0.1140 B, alpha is dropped.
ImageU8 convert_channels(const ImageU8& image, int channels);

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

// The dtype descr and shape of an array whose data is written later.
struct NpySpec {
  std::string descr;
  std::vector<int64_t> shape;
};

// An uncompressed .npz written while its data arrives, never held whole in memory: the arrays'
// shapes are fixed up front, each array's bytes are appended in C order (the arrays in any
// interleaving), and finish() checks that every byte came before it renames the temporary file
// to `path`. A writer destroyed unfinished removes its temporary file, so a partial archive never
// carries the final name. Members and offsets of zip64_from bytes or more get zip64 records (the
// 4 GiB limit of plain zip; a lower value only tests them).
class NpzStreamWriter {
 public:
  NpzStreamWriter(const std::string& path,
                  const std::vector<std::pair<std::string, NpySpec>>& arrays,
                  uint64_t zip64_from = 0xffffffffu);
  ~NpzStreamWriter();
  NpzStreamWriter(const NpzStreamWriter&) = delete;
  NpzStreamWriter& operator=(const NpzStreamWriter&) = delete;

  void append(size_t array, const void* data, size_t size);
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The same for a single .npy file.
class NpyStreamWriter {
 public:
  NpyStreamWriter(const std::string& path, const NpySpec& spec);
  ~NpyStreamWriter();
  NpyStreamWriter(const NpyStreamWriter&) = delete;
  NpyStreamWriter& operator=(const NpyStreamWriter&) = delete;

  void append(const void* data, size_t size);
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cm
