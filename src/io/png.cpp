// PNG reading and writing with libpng, including tEXt metadata ("parameters" and the like).
//
// libpng reports errors by longjmp. Jumping over a frame that owns C++ objects skips their
// destructors, so every libpng call that can fail lives in a small function whose locals are
// plain pointers and which calls setjmp itself; the C++ code around it only sees a bool.
#include "cm/image_io.h"

#include <fcntl.h>
#include <png.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <memory>

#include "cm/error.h"
#include "io/files.h"

namespace cm {
namespace {

constexpr size_t kErrorSize = 256;
// libpng allocates a chunk's buffer from its length field before reading its bytes: a 100-byte
// file whose tEXt length said 1.9 GB made it allocate 1.9 GB (found by tests/fuzz/fuzz_png;
// png_set_chunk_malloc_max did not stop it in Debian's libpng). The whole file is in memory, so
// every chunk's length is checked against what is left of it first.
std::string check_chunk_lengths(const std::vector<uint8_t>& bytes) {
  size_t at = 8;
  while (bytes.size() - at >= 8) {
    const uint32_t length = (uint32_t{bytes[at]} << 24) | (uint32_t{bytes[at + 1]} << 16) |
                            (uint32_t{bytes[at + 2]} << 8) | uint32_t{bytes[at + 3]};
    const std::string type(reinterpret_cast<const char*>(&bytes[at + 4]), 4);
    const size_t left = bytes.size() - at - 8;
    if (length > left || left - length < 4)
      return "chunk '" + type + "' at byte " + std::to_string(at) + " claims " +
             std::to_string(length) + " bytes, the file has " + std::to_string(left) +
             " left (truncated or damaged)";
    at += 12 + size_t{length};
    if (type == "IEND") break;
  }
  return "";
}

// Everything the libpng callbacks touch; plain data so it can sit beside setjmp.
struct PngState {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;  // reading: the whole file
  size_t size = 0;
  size_t offset = 0;
  char error[kErrorSize] = {};
};

void on_png_error(png_structp png, png_const_charp message) {
  auto* state = static_cast<PngState*>(png_get_error_ptr(png));
  std::snprintf(state->error, kErrorSize, "%s", message);
  png_longjmp(png, 1);
}

// Warnings (odd ICC profiles, ancillary chunk CRC errors) are not worth a line on stderr.
void on_png_warning(png_structp, png_const_charp) {}

void read_from_memory(png_structp png, png_bytep out, png_size_t length) {
  auto* state = static_cast<PngState*>(png_get_io_ptr(png));
  if (length > state->size - state->offset) png_error(png, "unexpected end of file (truncated)");
  std::memcpy(out, state->data + state->offset, length);
  state->offset += length;
}

void write_to_memory(png_structp png, png_bytep data, png_size_t length) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), data, data + length);
}

void flush_memory(png_structp) {}

bool encode_png_rows(PngState* s, std::vector<uint8_t>* out, int width, int height,
                     int color_type, png_bytep* rows, png_text* text, int num_text) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_write_fn(s->png, out, write_to_memory, flush_memory);
  png_set_IHDR(s->png, s->info, width, height, 8, color_type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  if (num_text > 0) png_set_text(s->png, s->info, text, num_text);
  png_write_info(s->png, s->info);
  png_write_image(s->png, rows);
  png_write_end(s->png, s->info);
  return true;
}

// Reads the header and asks libpng for 8-bit gray, RGB or RGBA whatever the file holds.
bool decode_png_header(PngState* s, png_uint_32* width, png_uint_32* height, int* channels,
                       int* bit_depth, png_size_t* row_bytes) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_set_read_fn(s->png, s, read_from_memory);
  png_read_info(s->png, s->info);
  const int color_type = png_get_color_type(s->png, s->info);
  const int depth = png_get_bit_depth(s->png, s->info);
  const bool has_trns = png_get_valid(s->png, s->info, PNG_INFO_tRNS) != 0;
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(s->png);
  if (color_type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(s->png);
  if (has_trns) png_set_tRNS_to_alpha(s->png);
  if (depth == 16) png_set_scale_16(s->png);
  // The API has no gray+alpha layout, so gray with any alpha becomes RGBA.
  if (color_type == PNG_COLOR_TYPE_GRAY_ALPHA || (color_type == PNG_COLOR_TYPE_GRAY && has_trns))
    png_set_gray_to_rgb(s->png);
  png_set_interlace_handling(s->png);
  png_read_update_info(s->png, s->info);
  *width = png_get_image_width(s->png, s->info);
  *height = png_get_image_height(s->png, s->info);
  *channels = png_get_channels(s->png, s->info);
  *bit_depth = png_get_bit_depth(s->png, s->info);
  *row_bytes = png_get_rowbytes(s->png, s->info);
  return true;
}

bool decode_png_pixels(PngState* s, png_bytep* rows) {
  if (setjmp(png_jmpbuf(s->png))) return false;
  png_read_image(s->png, rows);
  png_read_end(s->png, s->info);  // text chunks after IDAT land in the same info
  return true;
}

// PNG keywords: 1-79 printable Latin-1 bytes, no leading, trailing or doubled spaces.
void check_keyword(const std::string& path, const std::string& key) {
  bool ok = !key.empty() && key.size() <= 79 && key.front() != ' ' && key.back() != ' ' &&
            key.find("  ") == std::string::npos;
  for (unsigned char c : key) ok = ok && ((c >= 32 && c <= 126) || c >= 161);
  if (!ok) throw Error(path + ": invalid PNG text keyword '" + key + "'");
}


}  // namespace

std::vector<uint8_t> encode_png(const ImageU8& image, const TextChunks& text, const std::string& path) {
  const int c = image.channels;
  if (image.width <= 0 || image.height <= 0)
    throw Error(path + ": invalid image size " + std::to_string(image.width) + "x" +
                std::to_string(image.height));
  if (c != 1 && c != 3 && c != 4)
    throw Error(path + ": PNG needs 1, 3 or 4 channels, got " + std::to_string(c));
  const size_t row_bytes = static_cast<size_t>(image.width) * c;
  if (image.pixels.size() != row_bytes * image.height)
    throw Error(path + ": image has " + std::to_string(image.pixels.size()) + " bytes, " +
                std::to_string(image.width) + "x" + std::to_string(image.height) + "x" +
                std::to_string(c) + " needs " + std::to_string(row_bytes * image.height));

  std::vector<png_text> chunks(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    check_keyword(path, text[i].first);
    // tEXt has no length field of its own: the text ends at the chunk end, and libpng takes
    // its length with strlen, so an embedded NUL would silently cut it.
    if (text[i].second.find('\0') != std::string::npos)
      throw Error(path + ": PNG text '" + text[i].first + "' contains a NUL byte");
    chunks[i].compression = PNG_TEXT_COMPRESSION_NONE;
    chunks[i].key = const_cast<char*>(text[i].first.c_str());  // libpng only reads them
    chunks[i].text = const_cast<char*>(text[i].second.c_str());
    chunks[i].text_length = text[i].second.size();
  }
  std::vector<png_bytep> rows(image.height);
  for (int y = 0; y < image.height; ++y)
    rows[y] = const_cast<png_bytep>(image.pixels.data() + y * row_bytes);
  const int color_type = c == 1 ? PNG_COLOR_TYPE_GRAY
                         : c == 3 ? PNG_COLOR_TYPE_RGB
                                  : PNG_COLOR_TYPE_RGB_ALPHA;

  std::vector<uint8_t> out;
  PngState state;
  state.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &state, on_png_error, on_png_warning);
  if (state.png != nullptr) state.info = png_create_info_struct(state.png);
  if (state.info == nullptr) {
    png_destroy_write_struct(&state.png, nullptr);
    throw Error(path + ": cannot create libpng writer");
  }
  const bool ok = encode_png_rows(&state, &out, image.width, image.height, color_type,
                                  rows.data(), chunks.data(), static_cast<int>(chunks.size()));
  png_destroy_write_struct(&state.png, &state.info);
  if (!ok) throw Error(path + ": cannot write PNG: " + state.error);
  return out;
}

void write_png(const std::string& path, const ImageU8& image, const TextChunks& text) {
  const std::vector<uint8_t> bytes = encode_png(image, text, path);
  write_atomically(path, [&](std::FILE* file) {
    if (std::fwrite(bytes.data(), 1, bytes.size(), file) != bytes.size())
      throw Error(path + ": cannot write PNG: " + std::strerror(errno));
  });
}

ImageU8 read_png(const std::string& path, TextChunks* text) {
  return decode_png(read_whole_file(path), text, path);
}

ImageU8 decode_png(const std::vector<uint8_t>& bytes, TextChunks* text, const std::string& path) {
  if (bytes.size() < 8 || png_sig_cmp(bytes.data(), 0, 8) != 0)
    throw Error(path + ": not a PNG file");
  if (const std::string damage = check_chunk_lengths(bytes); !damage.empty())
    throw Error(path + ": invalid PNG: " + damage);

  PngState state;
  state.data = bytes.data();
  state.size = bytes.size();
  state.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &state, on_png_error, on_png_warning);
  if (state.png != nullptr) state.info = png_create_info_struct(state.png);
  struct Guard {
    PngState* s;
    ~Guard() { png_destroy_read_struct(&s->png, &s->info, nullptr); }
  } guard{&state};
  if (state.info == nullptr) throw Error(path + ": cannot create libpng reader");

  png_uint_32 width = 0, height = 0;
  int channels = 0, bit_depth = 0;
  png_size_t row_bytes = 0;
  if (!decode_png_header(&state, &width, &height, &channels, &bit_depth, &row_bytes))
    throw Error(path + ": invalid PNG: " + state.error);
  if (bit_depth != 8 || (channels != 1 && channels != 3 && channels != 4) ||
      row_bytes != static_cast<png_size_t>(width) * channels)
    throw Error(path + ": unsupported PNG layout after conversion");
  // Deflate expands at most ~1032x and 1-bit palette to RGBA another 32x; a header claiming
  // more than that is lying, and trusting it would allocate gigabytes for a tiny file.
  const double total = static_cast<double>(row_bytes) * height;
  if (total > 33100.0 * static_cast<double>(bytes.size()) + (1 << 20))
    throw Error(path + ": invalid PNG: image size " + std::to_string(width) + "x" +
                std::to_string(height) + " does not fit the file size");

  ImageU8 image;
  image.width = static_cast<int>(width);
  image.height = static_cast<int>(height);
  image.channels = channels;
  image.pixels.resize(row_bytes * height);
  std::vector<png_bytep> rows(height);
  for (png_uint_32 y = 0; y < height; ++y) rows[y] = image.pixels.data() + y * row_bytes;
  if (!decode_png_pixels(&state, rows.data()))
    throw Error(path + ": invalid PNG: " + state.error);

  if (text != nullptr) {
    text->clear();
    png_textp chunks = nullptr;
    const int count = png_get_text(state.png, state.info, &chunks, nullptr);
    // zTXt and iTXt carry the same kind of metadata (some tools write "parameters" as iTXt),
    // so they are returned too; iTXt keeps its length in a separate field.
    for (int i = 0; i < count; ++i) {
      const bool itxt = chunks[i].compression >= PNG_ITXT_COMPRESSION_NONE;
      const size_t length = itxt ? chunks[i].itxt_length : chunks[i].text_length;
      if (chunks[i].key == nullptr) continue;
      text->emplace_back(chunks[i].key,
                         chunks[i].text ? std::string(chunks[i].text, length) : std::string());
    }
  }
  return image;
}

}  // namespace cm
