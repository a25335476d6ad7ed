// Helpers shared by the cm subcommands.
#pragma once

#include <exception>
#include <string>
#include <vector>

#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include "cm/log.h"

namespace CLI {
class App;
class Validator;
}  // namespace CLI

namespace cm {
struct LoadOptions;
}

namespace cm::cli {

// A CLI11 check: an integer of at least `min` ("must be at least 1, got 0"; CLI11's own
// PositiveNumber names a 300-digit upper bound).
CLI::Validator at_least(long long min);
// A CLI11 check: a value given must not be empty (`--class ""` was silently no class).
CLI::Validator not_empty();
// A CLI11 check for seeds: a whole 64-bit integer (a longer number was silently saturated).
CLI::Validator seed_value();

// --device, --devices and --no-cuda-graphs, shared by generate, edit and bench.
struct DeviceArgs {
  std::string device = "cpu";
  std::string devices;  // "0,1": split each batch over these GPUs
  bool no_cuda_graphs = false;
  bool winograd = false;
};
void add_device_options(CLI::App& app, DeviceArgs& args);
// --winograd (LoadOptions::winograd), for the subcommands that load a model.
void add_winograd_flag(CLI::App& app, bool& winograd);
// Sets load.winograd: cm::Error off the CPU; one line on stderr where this build or CPU has no
// Winograd kernel (the convolutions then stay direct).
void apply_winograd(bool winograd, LoadOptions& load);
// False, after that line on stderr, where --winograd cannot take effect here.
bool winograd_or_warn();
// Sets load.device and load.devices; cm::Error naming the flag for a bad value or a GPU index
// this machine does not have.
void apply_device_args(const DeviceArgs& args, LoadOptions& load);

// "float32" | "fp32" | "bfloat16" | "bf16" | "float16" | "fp16"; cm::Error naming the value.
// --dtype NAME on `device` (cm/dtype.h: `auto` resolved), printing dtype_warning's line if any.
c10::ScalarType choose_dtype(const std::string& name, c10::Device device);
// "cpu" | "cuda" | "cuda:N"; cm::Error when CUDA is not available in this build.
c10::Device parse_device(const std::string& name);
// "22,0" -> {22, 0}; cm::Error naming the option and the bad item.
std::vector<int64_t> parse_int_list(const std::string& option, const std::string& text);
// -t/--threads: 0 is adaptive (cm/tuning.h) where `adaptive`, else every core.
void set_threads(int threads, bool adaptive = true);
// The model folder or repository id to use: `model`, else $CM_MODEL, else the shipped
// Fashion-MNIST model.
std::string model_or_default(const std::string& model);
// A shipped folder (models/NAME), found from where cm is: models/ beside the binary (a build
// tree links it there) or ../share/consistency/models (an installed cm); cm::Error if neither,
// saying what to pass `instead`.
std::string shipped_model(const std::string& name, const std::string& instead);
// "out.png" -> out.png for one image, out_0.png, out_1.png, ... for several; a %d in the name
// takes the index instead.
std::string output_name(const std::string& pattern, int index, int count);
// "3", "3,7", or names from the model's class_names.json ("sneaker,bag"); cm::Error naming an
// unknown one.
std::vector<int64_t> parse_classes(const std::string& text, const std::vector<std::string>& names);
// Writes the string to stderr with a newline unless quiet.
void log(bool quiet, const std::string& line);
// Ctrl-C in cm generate and cm edit: the first one stops the command at the next image or step
// (files already written stay, nothing half-written is left, exit 130); a second one ends the
// process at once. The previous handler comes back when the guard goes.
class Interrupted : public std::exception {
 public:
  const char* what() const noexcept override { return "interrupted"; }
};
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

 private:
  void (*previous_)(int);
};
// Throws Interrupted once Ctrl-C was pressed under an InterruptGuard.
void throw_if_interrupted();

// The library's LogCallback for a subcommand: lines to stderr, or nothing with --quiet.
LogCallback stderr_log(bool quiet);

}  // namespace cm::cli
