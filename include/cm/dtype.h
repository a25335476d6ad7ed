// The compute dtype by name: one parser for every tool, and `auto`, which picks bfloat16 only
// where the hardware computes it natively.
#pragma once

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <string>

namespace cm {

// "float32" | "fp32" | "f32" | "bfloat16" | "bf16" | "float16" | "fp16" | "f16"; cm::Error
// naming the value otherwise ("auto" is resolve_dtype's).
c10::ScalarType parse_dtype(const std::string& name);
// As parse_dtype, and "auto": auto_dtype(device).
c10::ScalarType resolve_dtype(const std::string& name, c10::Device device);
// "float32", "bfloat16", "float16" (c10's name for anything else).
std::string dtype_name(c10::ScalarType type);

struct DtypeSupport {
  bool cpu_bf16 = false;   // AVX512_BF16 or AMX-BF16: bfloat16 dot products in hardware
  bool cuda_bf16 = false;  // the GPU (compute capability 8.0 or later)
};
// This process's hardware (the GPU only when `device` is a CUDA device).
DtypeSupport dtype_support(c10::Device device);

// float32 (exact) unless the device computes bfloat16 natively, then bfloat16.
c10::ScalarType auto_dtype(c10::Device device, const DtypeSupport& support);
c10::ScalarType auto_dtype(c10::Device device);

// One line for a dtype the device only emulates ("" when there is nothing to say): on a CPU
// without bfloat16 instructions, bfloat16 is converted to float32 for every operation, and ran
// 3.7x slower than float32 on an AVX-512 Xeon without them (issue 16).
std::string dtype_warning(c10::ScalarType type, c10::Device device, const DtypeSupport& support);

}  // namespace cm
