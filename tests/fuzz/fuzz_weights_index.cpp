// A sharded checkpoint's index (diffusion_pytorch_model.safetensors.index.json): shard names
// that must stay inside the folder.
#include "cm/error.h"
#include "io/weights_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    cm::parse_weights_index(std::string(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const cm::Error&) {
  }
  return 0;
}
