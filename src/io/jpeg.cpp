// JPEG reading and writing with libjpeg(-turbo).
//
// libjpeg reports errors through error_exit, which must not return; it longjmps back here. As in
// png.cpp, every libjpeg call that can fail sits in a small function whose locals are plain
// pointers and which calls setjmp itself, so no C++ destructor is ever jumped over.
#include <csetjmp>
#include <cstdio>  // before jpeglib.h, which uses FILE without including it
#include <cstdlib>
#include <string>

#include <jerror.h>
#include <jpeglib.h>

#include "cm/config.h"
#include "cm/error.h"
#include "cm/image_io.h"

namespace cm {
namespace {

struct JpegError {
  jpeg_error_mgr base;  // first, so libjpeg's pointer to it is also a pointer to this
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {};
};

void on_jpeg_error(j_common_ptr info) {
  auto* err = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, err->message);
  std::longjmp(err->jump, 1);
}

// A premature end of data is only a warning to libjpeg, which pads the rest with gray; a
// half-decoded picture is not what the caller asked for, so it is an error here. Other warnings
// (stray bytes between markers, common in camera files) decode fine and are ignored.
void on_jpeg_warning(j_common_ptr info, int level) {
  if (level < 0 && info->err->msg_code == JWRN_JPEG_EOF) on_jpeg_error(info);
}

// The decoder's header: the size and the layout it will produce (gray or RGB).
bool decode_jpeg_header(jpeg_decompress_struct* d, JpegError* err, const uint8_t* data,
                        size_t size) {
  if (setjmp(err->jump)) return false;
  jpeg_create_decompress(d);
  jpeg_mem_src(d, data, static_cast<unsigned long>(size));
  jpeg_read_header(d, TRUE);
  if (d->jpeg_color_space == JCS_CMYK || d->jpeg_color_space == JCS_YCCK) {
    std::snprintf(err->message, sizeof err->message, "CMYK JPEG is not supported");
    return false;
  }
  d->out_color_space = d->num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(d);
  return true;
}

bool decode_jpeg_pixels(jpeg_decompress_struct* d, JpegError* err, uint8_t* pixels,
                        size_t row_bytes) {
  if (setjmp(err->jump)) return false;
  while (d->output_scanline < d->output_height) {
    JSAMPROW row = pixels + d->output_scanline * row_bytes;
    jpeg_read_scanlines(d, &row, 1);
  }
  jpeg_finish_decompress(d);
  return true;
}

bool encode_jpeg(jpeg_compress_struct* c, JpegError* err, const ImageU8* image, int quality,
                 unsigned char** out, unsigned long* out_size) {
  if (setjmp(err->jump)) return false;
  jpeg_create_compress(c);
  jpeg_mem_dest(c, out, out_size);
  c->image_width = static_cast<JDIMENSION>(image->width);
  c->image_height = static_cast<JDIMENSION>(image->height);
  c->input_components = image->channels;
  c->in_color_space = image->channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(c);
  jpeg_set_quality(c, quality, TRUE);
  jpeg_start_compress(c, TRUE);
  const size_t row_bytes = static_cast<size_t>(image->width) * image->channels;
  while (c->next_scanline < c->image_height) {
    JSAMPROW row = const_cast<uint8_t*>(image->pixels.data()) + c->next_scanline * row_bytes;
    jpeg_write_scanlines(c, &row, 1);
  }
  jpeg_finish_compress(c);
  return true;
}

}  // namespace

ImageU8 read_jpeg(const std::string& path) {
  const std::string bytes = read_text_file(path);
  return decode_jpeg(std::vector<uint8_t>(bytes.begin(), bytes.end()), path);
}

ImageU8 decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& path) {
  const auto* data = bytes.data();
  if (bytes.size() < 3 || data[0] != 0xFF || data[1] != 0xD8 || data[2] != 0xFF)
    throw Error(path + ": not a JPEG file");

  jpeg_decompress_struct d{};
  JpegError err;
  d.err = jpeg_std_error(&err.base);
  err.base.error_exit = on_jpeg_error;
  err.base.emit_message = on_jpeg_warning;
  struct Guard {
    jpeg_decompress_struct* d;
    ~Guard() { jpeg_destroy_decompress(d); }
  } guard{&d};
  if (!decode_jpeg_header(&d, &err, data, bytes.size()))
    throw Error(path + ": invalid JPEG: " + err.message);
  // A JPEG's pixels come from at least one 8x8 block per 64 pixels, each at least a few bits;
  // a header claiming far more than that is lying and would make us allocate gigabytes.
  const double total = static_cast<double>(d.output_width) * d.output_height;
  if (total > 4096.0 * static_cast<double>(bytes.size()) + (1 << 20))
    throw Error(path + ": invalid JPEG: image size " + std::to_string(d.output_width) + "x" +
                std::to_string(d.output_height) + " does not fit the file size");

  ImageU8 image;
  image.width = static_cast<int>(d.output_width);
  image.height = static_cast<int>(d.output_height);
  image.channels = d.output_components;
  const size_t row_bytes = static_cast<size_t>(image.width) * image.channels;
  image.pixels.resize(row_bytes * image.height);
  if (!decode_jpeg_pixels(&d, &err, image.pixels.data(), row_bytes))
    throw Error(path + ": invalid JPEG: " + err.message);
  return image;
}

void write_jpeg(const std::string& path, const ImageU8& image, int quality) {
  if (image.width <= 0 || image.height <= 0)
    throw Error(path + ": invalid image size " + std::to_string(image.width) + "x" +
                std::to_string(image.height));
  if (image.channels != 1 && image.channels != 3)
    throw Error(path + ": JPEG needs 1 or 3 channels, got " + std::to_string(image.channels));
  if (image.pixels.size() != static_cast<size_t>(image.width) * image.height * image.channels)
    throw Error(path + ": image has " + std::to_string(image.pixels.size()) + " bytes, " +
                std::to_string(image.width) + "x" + std::to_string(image.height) + "x" +
                std::to_string(image.channels) + " needs more or fewer");
  if (quality < 1 || quality > 100)
    throw Error(path + ": JPEG quality must be in [1, 100], got " + std::to_string(quality));

  jpeg_compress_struct c{};
  JpegError err;
  c.err = jpeg_std_error(&err.base);
  err.base.error_exit = on_jpeg_error;
  unsigned char* out = nullptr;
  unsigned long out_size = 0;
  const bool ok = encode_jpeg(&c, &err, &image, quality, &out, &out_size);
  jpeg_destroy_compress(&c);
  std::string bytes;
  if (ok) bytes.assign(reinterpret_cast<const char*>(out), out_size);
  std::free(out);  // jpeg_mem_dest's buffer is malloc'd and left to the caller
  if (!ok) throw Error(path + ": cannot write JPEG: " + err.message);
  write_text_file(path, bytes);
}

}  // namespace cm
