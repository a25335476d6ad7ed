// torch.save checkpoints (the original repository's .pt files): the zip reader and the
// restricted unpickler.
#include "cm/error.h"
#include "cm/pt_archive.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    volatile unsigned sink = 0;
    for (const auto& [name, tensor] : cm::parse_pt_state_dict(data, size, "fuzz"))
      sink += name.size() + cm::fuzz::touch(tensor.data.data(), tensor.data.size());
  } catch (const cm::Error&) {
  }
  return 0;
}
