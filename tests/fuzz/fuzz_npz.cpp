// .npz archives: the zip directory and each member's .npy header.
#include "cm/error.h"
#include "cm/image_io.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cm::fuzz::input_file(data, size, ".npz");
  try {
    volatile unsigned sink = 0;
    for (const auto& [name, array] : cm::read_npz(path))
      sink += name.size() + cm::fuzz::touch(array.data.data(), array.data.size());
  } catch (const cm::Error&) {
  }
  return 0;
}
