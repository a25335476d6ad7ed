// PNG decoding (images to edit, uploads to the server), text chunks included.
#include <vector>

#include "cm/error.h"
#include "cm/image_io.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    cm::TextChunks text;
    const auto image = cm::decode_png(std::vector<uint8_t>(data, data + size), &text);
    volatile unsigned sink = cm::fuzz::touch(image.pixels.data(), image.pixels.size());
    (void)sink;
  } catch (const cm::Error&) {
  }
  return 0;
}
