#include "common.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include <CLI/CLI.hpp>

#include "cm/config.h"
#include "cm/dtype.h"
#include "cm/error.h"
#include "cm/pipeline.h"
#include "cm/tuning.h"

namespace cm::cli {

c10::ScalarType choose_dtype(const std::string& name, c10::Device device) {
  const c10::ScalarType type = resolve_dtype(name, device);
  const std::string warning = dtype_warning(type, device, dtype_support(device));
  if (!warning.empty()) std::cerr << warning << std::endl;
  return type;
}

c10::Device parse_device(const std::string& name) {
  if (name == "cpu") return c10::kCPU;
  if (name.rfind("cuda", 0) == 0) {
    if (!torch::cuda::is_available())
      throw Error("--device: '" + name + "' requested, but this build has no usable CUDA device");
    try {
      return c10::Device(name);
    } catch (const std::exception&) {
      throw Error("--device: bad value '" + name + "'");
    }
  }
  throw Error("--device: unknown value '" + name + "' (cpu, cuda, cuda:N)");
}

void add_device_options(CLI::App& app, DeviceArgs& a) {
  app.add_option("--device", a.device, "cpu, cuda or cuda:N")->capture_default_str();
  app.add_option("--devices", a.devices,
                 "CUDA: split each batch over these GPUs, e.g. 0,1 (the images stay those of one "
                 "GPU)");
  app.add_flag("--no-cuda-graphs", a.no_cuda_graphs,
               "CUDA: run the sampling loop eagerly instead of replaying a captured CUDA graph");
  add_winograd_flag(app, a.winograd);
}

void add_winograd_flag(CLI::App& app, bool& winograd) {
  app.add_flag("--winograd", winograd,
               "CPU float32: 3x3 convolutions by oneDNN's Winograd algorithm (faster on large "
               "layers, ~1e-5 off the exact float32 numbers; AVX-512 CPUs)");
}

void apply_winograd(bool winograd, LoadOptions& load) {
  load.winograd = false;
  if (!winograd) return;
  if (!load.device.is_cpu())
    throw Error("--winograd: CPU only (the model is on " + load.device.str() + ")");
  load.winograd = winograd_or_warn();
}

bool winograd_or_warn() {
  if (winograd_supported()) return true;
  std::cerr << "--winograd: no Winograd kernel here (it needs the LibTorch 1.13 build and an "
               "AVX-512 CPU); the convolutions stay direct"
            << std::endl;
  return false;
}

void apply_device_args(const DeviceArgs& a, LoadOptions& load) {
  load.device = parse_device(a.device);
  apply_winograd(a.winograd, load);
  load.devices.clear();
  if (a.devices.empty()) return;
  if (!load.device.is_cuda()) throw Error("--devices: needs --device cuda");
  const auto count = static_cast<int64_t>(torch::cuda::device_count());
  for (const int64_t d : parse_int_list("--devices", a.devices)) {
    if (d < 0 || d >= count)
      throw Error("--devices: GPU " + std::to_string(d) + " does not exist (this machine has " +
                  std::to_string(count) + ")");
    load.devices.push_back(static_cast<int>(d));
  }
}

std::vector<int64_t> parse_int_list(const std::string& option, const std::string& text) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = text.find(',', start);
    const std::string item = text.substr(start, end == std::string::npos ? end : end - start);
    size_t used = 0;
    int64_t value = 0;
    try {
      value = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (item.empty() || used != item.size())
      throw Error(option + ": '" + item + "' is not an integer (in '" + text + "')");
    out.push_back(value);
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

CLI::Validator not_empty() {
  return CLI::Validator(
      [](std::string& text) -> std::string { return text.empty() ? "must not be empty" : ""; }, "");
}

CLI::Validator seed_value() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        try {
          size_t end = 0;
          std::stoll(text, &end);
          if (end == text.size()) return "";
        } catch (const std::exception&) {
        }
        return "must be an integer between -9223372036854775808 and 9223372036854775807, got " +
               text;
      },
      "INT");
}

CLI::Validator at_least(long long min) {
  return CLI::Validator(
      [min](std::string& text) -> std::string {
        try {
          size_t end = 0;
          const long long v = std::stoll(text, &end);
          if (end == text.size() && v >= min) return "";
        } catch (const std::exception&) {
        }
        return "must be at least " + std::to_string(min) + ", got " + text;
      },
      "INT>=" + std::to_string(min));
}

void set_threads(int threads, bool adaptive) {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // More threads than cores only slow a call down; thousands never finished starting.
  if (threads < 0 || threads > 4 * cores)
    throw Error("-t/--threads: must be between 0 (" +
                std::string(adaptive ? "the cores other processes leave free" : "all cores") +
                ") and " + std::to_string(4 * cores) + " (4 x this machine's " +
                std::to_string(cores) + " cores), got " + std::to_string(threads));
  set_cpu_threads(threads == 0 && !adaptive ? cores : threads);
}

std::string model_or_default(const std::string& model) {
  if (!model.empty()) return model;
  if (const char* env = std::getenv("CM_MODEL")) return env;
  return shipped_model("fmnist-cm", "-m MODEL or set CM_MODEL");
}

std::string shipped_model(const std::string& name, const std::string& instead) {
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  const auto dir = exe.parent_path();
  for (const auto& folder :
       {dir / "models" / name, dir.parent_path() / "share" / "consistency" / "models" / name}) {
    if (!ec && std::filesystem::is_directory(folder)) return folder.string();
  }
  throw Error("the shipped model '" + name + "' is not beside " + exe.string() + " (models/" +
              name + " or ../share/consistency/models/" + name + "): pass " + instead);
}

std::string output_name(const std::string& pattern, int index, int count) {
  const size_t pos = pattern.find("%d");
  if (pos != std::string::npos)
    return pattern.substr(0, pos) + std::to_string(index) + pattern.substr(pos + 2);
  if (count == 1) return pattern;
  const std::filesystem::path p(pattern);
  return (p.parent_path() /
          (p.stem().string() + "_" + std::to_string(index) + p.extension().string()))
      .string();
}

std::vector<int64_t> parse_classes(const std::string& text, const std::vector<std::string>& names) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = text.find(',', start);
    const std::string item = text.substr(start, end == std::string::npos ? end : end - start);
    if (const auto c = find_class_name(names, item)) {
      out.push_back(*c);
    } else if (!item.empty() && item.find_first_not_of("-0123456789") != std::string::npos) {
      std::string known;
      for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
      throw Error("--class: unknown class '" + item + "'" +
                  (names.empty() ? " (this model has no class names; use numbers)"
                                 : " (known: " + known + ")"));
    } else {
      const auto v = parse_int_list("--class", item);
      out.insert(out.end(), v.begin(), v.end());
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

void log(bool quiet, const std::string& line) {
  if (!quiet) std::cerr << line << std::endl;
}

namespace {
volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) {
  if (g_interrupted) {  // the second Ctrl-C: the default action, now
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
  g_interrupted = 1;
}
}  // namespace

InterruptGuard::InterruptGuard() : previous_(std::signal(SIGINT, on_interrupt)) {
  g_interrupted = 0;
}
InterruptGuard::~InterruptGuard() { std::signal(SIGINT, previous_); }

void throw_if_interrupted() {
  if (g_interrupted) throw Interrupted();
}

LogCallback stderr_log(bool quiet) {
  if (quiet) return nullptr;
  return [](const std::string& line) { std::cerr << line << std::endl; };
}

}  // namespace cm::cli
