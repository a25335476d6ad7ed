// JPEG decoding (images to edit, uploads to the server).
#include <vector>

#include "cm/error.h"
#include "cm/image_io.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto image = cm::decode_jpeg(std::vector<uint8_t>(data, data + size), "fuzz");
    volatile unsigned sink = cm::fuzz::touch(image.pixels.data(), image.pixels.size());
    (void)sink;
  } catch (const cm::Error&) {
  }
  return 0;
}
