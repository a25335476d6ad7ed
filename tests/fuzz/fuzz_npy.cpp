// .npy arrays (class labels, images and noise given to cm edit and cm generate).
#include "cm/error.h"
#include "cm/image_io.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cm::fuzz::input_file(data, size, ".npy");
  try {
    const auto array = cm::read_npy(path);
    volatile unsigned sink = cm::fuzz::touch(array.data.data(), array.data.size());
    (void)sink;
  } catch (const cm::Error&) {
  }
  return 0;
}
