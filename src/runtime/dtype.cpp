#include "cm/dtype.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "cm/error.h"

#if CM_CUDA
#include <ATen/cuda/CUDAContext.h>
#endif

namespace cm {
namespace {

bool cpu_has_bf16_instructions() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512f")) return false;  // also: the OS saves AVX-512 state
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5))) return true;   // AVX512_BF16
  if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (d & (1u << 22))) return true;  // AMX-BF16
#endif
  return false;
}

}  // namespace

c10::ScalarType parse_dtype(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "f32") return c10::kFloat;
  if (name == "bfloat16" || name == "bf16") return c10::kBFloat16;
  if (name == "float16" || name == "fp16" || name == "f16") return c10::kHalf;
  throw Error("--dtype: unknown value '" + name + "' (float32, bfloat16, float16, auto)");
}

c10::ScalarType resolve_dtype(const std::string& name, c10::Device device) {
  return name == "auto" ? auto_dtype(device) : parse_dtype(name);
}

std::string dtype_name(c10::ScalarType type) {
  switch (type) {
    case c10::kFloat:
      return "float32";
    case c10::kBFloat16:
      return "bfloat16";
    case c10::kHalf:
      return "float16";
    default:
      return c10::toString(type);
  }
}

DtypeSupport dtype_support(c10::Device device) {
  DtypeSupport s;
  s.cpu_bf16 = cpu_has_bf16_instructions();
#if CM_CUDA
  if (device.is_cuda()) {
    const auto* p = at::cuda::getDeviceProperties(device.has_index() ? device.index() : 0);
    s.cuda_bf16 = p->major >= 8;
  }
#else
  (void)device;
#endif
  return s;
}

c10::ScalarType auto_dtype(c10::Device device, const DtypeSupport& support) {
  const bool native = device.is_cuda() ? support.cuda_bf16 : support.cpu_bf16;
  return native ? c10::kBFloat16 : c10::kFloat;
}

c10::ScalarType auto_dtype(c10::Device device) {
  return auto_dtype(device, dtype_support(device));
}

std::string dtype_warning(c10::ScalarType type, c10::Device device, const DtypeSupport& support) {
  if (type == c10::kBFloat16 && device.is_cpu() && !support.cpu_bf16)
    return "warning: this CPU has no bfloat16 instructions (AVX512_BF16 or AMX): bfloat16 is "
           "emulated and usually slower than float32 here (--dtype auto picks float32)";
  return "";
}

}  // namespace cm
