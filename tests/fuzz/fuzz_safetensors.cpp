// The safetensors reader: header length, JSON header, dtypes, shapes and offsets.
#include "cm/error.h"
#include "cm/safetensors.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = cm::fuzz::input_file(data, size, ".safetensors");
  try {
    cm::SafeTensorsFile file(path);
    volatile unsigned sink = 0;
    for (const auto& t : file.tensors()) sink += cm::fuzz::touch(t.data, t.nbytes);
    for (const auto& [key, value] : file.metadata()) sink += key.size() + value.size();
  } catch (const cm::Error&) {
  }
  return 0;
}
