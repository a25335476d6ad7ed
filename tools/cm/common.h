// Helpers shared by the cm subcommands.
#pragma once

#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

namespace cm::cli {

// "float32" | "fp32" | "bfloat16" | "bf16" | "float16" | "fp16"; cm::Error naming the value.
c10::ScalarType parse_dtype(const std::string& name);
std::string dtype_label(c10::ScalarType type);
// "cpu" | "cuda" | "cuda:N"; cm::Error when CUDA is not available in this build.
c10::Device parse_device(const std::string& name);
// "22,0" -> {22, 0}; cm::Error naming the option and the bad item.
std::vector<int64_t> parse_int_list(const std::string& option, const std::string& text);
// Threads for intra-op work: the given count, or all hardware threads when <= 0.
void set_threads(int threads);
// Writes the string to stderr with a newline unless quiet.
void log(bool quiet, const std::string& line);

}  // namespace cm::cli
