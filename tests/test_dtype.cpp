// --dtype: one parser, `auto` against the hardware, and the warning for emulated bfloat16.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "cm/dtype.h"
#include "cm/error.h"

namespace cm {
namespace {

// Independently of the code under test: the kernel's own flags for this CPU.
bool cpuinfo_has_bf16() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    return line.find(" avx512_bf16") != std::string::npos ||
           line.find(" amx_bf16") != std::string::npos;
  }
  return false;
}

TEST(Dtype, NamesAndAliases) {
  EXPECT_EQ(parse_dtype("float32"), c10::kFloat);
  EXPECT_EQ(parse_dtype("fp32"), c10::kFloat);
  EXPECT_EQ(parse_dtype("bf16"), c10::kBFloat16);
  EXPECT_EQ(parse_dtype("float16"), c10::kHalf);
  EXPECT_EQ(dtype_name(c10::kBFloat16), "bfloat16");
  try {
    parse_dtype("float8");
    ADD_FAILURE() << "float8 accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'float8'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("auto"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_dtype("auto"), Error);  // auto needs a device: resolve_dtype
  EXPECT_THROW(parse_dtype(""), Error);
}

TEST(Dtype, AutoPicksBfloat16OnlyWhereItIsNative) {
  DtypeSupport none, cpu, gpu;
  cpu.cpu_bf16 = true;
  gpu.cuda_bf16 = true;
  EXPECT_EQ(auto_dtype(c10::kCPU, none), c10::kFloat);
  EXPECT_EQ(auto_dtype(c10::kCPU, cpu), c10::kBFloat16);
  EXPECT_EQ(auto_dtype(c10::kCPU, gpu), c10::kFloat);
  EXPECT_EQ(auto_dtype(c10::Device("cuda:0"), cpu), c10::kFloat);
  EXPECT_EQ(auto_dtype(c10::Device("cuda:0"), gpu), c10::kBFloat16);
  // This machine: the detection agrees with the kernel's CPU flags.
  EXPECT_EQ(dtype_support(c10::kCPU).cpu_bf16, cpuinfo_has_bf16());
  EXPECT_EQ(resolve_dtype("auto", c10::kCPU), cpuinfo_has_bf16() ? c10::kBFloat16 : c10::kFloat);
  EXPECT_EQ(resolve_dtype("bf16", c10::kCPU), c10::kBFloat16);
}

TEST(Dtype, WarnsOnlyForEmulatedBfloat16) {
  DtypeSupport none, cpu;
  cpu.cpu_bf16 = true;
  const std::string w = dtype_warning(c10::kBFloat16, c10::kCPU, none);
  EXPECT_EQ(w.rfind("warning: ", 0), 0u) << w;
  EXPECT_NE(w.find("bfloat16"), std::string::npos) << w;
  EXPECT_EQ(w.find('\n'), std::string::npos) << w;  // one line
  EXPECT_EQ(dtype_warning(c10::kBFloat16, c10::kCPU, cpu), "");
  EXPECT_EQ(dtype_warning(c10::kFloat, c10::kCPU, none), "");
  EXPECT_EQ(dtype_warning(c10::kBFloat16, c10::Device("cuda:0"), none), "");
}

}  // namespace
}  // namespace cm
