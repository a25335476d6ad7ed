#include "kernels/isa.h"

#include <cstdlib>
#include <string>

namespace cm::kernels {
namespace {

Isa detect() {
  __builtin_cpu_init();
  Isa isa = Isa::kGeneric;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isa = Isa::kAvx2;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    isa = Isa::kAvx512;
  }
  // ATen's own switch caps its kernels; it caps these too, so both stay on one instruction set.
  if (const char* cap = std::getenv("ATEN_CPU_CAPABILITY")) {
    const std::string c = cap;
    if (c == "default") isa = Isa::kGeneric;
    if (c == "avx2" && isa == Isa::kAvx512) isa = Isa::kAvx2;
  }
  return isa;
}

}  // namespace

Isa best_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    default:
      return "generic";
  }
}

}  // namespace cm::kernels
