// cm convert: a checkpoint of the original consistency-models repository (torch.save'd UNetModel
// state dict) to a diffusers pipeline folder. Everything but the option parsing is the library's
// (cm/convert.h).
#include <CLI/CLI.hpp>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cm/config.h"
#include "cm/convert.h"
#include "cm/error.h"
#include "subcommands.h"

namespace cm::cli {

namespace {

struct ConvertArgs {
  std::string input, output, dtype = "float32", class_names;
  int image_size = 0, num_head_channels = 0;
  ConvertOptions options;
};

// A JSON list of names, or one name per line.
std::vector<std::string> read_names(const std::string& path) {
  const std::string text = read_text_file(path);
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '[') {
    try {
      return nlohmann::json::parse(text).get<std::vector<std::string>>();
    } catch (const nlohmann::json::exception&) {
      throw Error(path + ": not a JSON list of strings");
    }
  }
  std::vector<std::string> names;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    names.push_back(line);
  }
  while (!names.empty() && names.back().empty()) names.pop_back();
  return names;
}

std::string join(const std::vector<int>& v) {
  std::string s;
  for (const int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

int run_convert(ConvertArgs a) {
  ConvertOptions& o = a.options;
  if (a.image_size > 0) o.image_size = a.image_size;
  if (a.num_head_channels > 0) o.num_head_channels = a.num_head_channels;
  o.dtype = a.dtype == "float16" ? DType::F16 : DType::F32;
  if (!a.class_names.empty()) o.class_names = read_names(a.class_names);
  const ConvertedUNet u = convert_original_checkpoint(a.input, a.output, o);
  const UNetConfig& c = u.config;
  std::string attention;
  for (size_t i = 0; i < c.down_block_types.size(); ++i) {
    if (c.down_block_types[i].rfind("Attn", 0) == 0)
      attention += (attention.empty() ? "" : ",") + std::to_string(c.sample_size >> i);
  }
  std::cout << "architecture: " << c.sample_size << "px"
            << (u.image_size_inferred ? " (from the channel multipliers)" : "") << ", channels "
            << join(c.block_out_channels) << ", " << c.layers_per_block
            << " residual blocks per level, attention at " << (attention.empty() ? "-" : attention)
            << " px and in the middle, heads of " << u.num_head_channels << " channels, "
            << (c.num_class_embeds ? std::to_string(*c.num_class_embeds) + " classes"
                                   : std::string("unconditional"))
            << (c.resnet_time_scale_shift == "scale_shift" ? ", scale-shift norm" : "") << ", "
            << c.downsample_type << " resampling\n"
            << "scheduler: " << o.scheduler.num_train_timesteps << " timesteps, sigma "
            << o.scheduler.sigma_min << " to " << o.scheduler.sigma_max << "\n"
            << "wrote " << a.output << " (" << u.weights.size() << " tensors, " << a.dtype << ")"
            << std::endl;
  return 0;
}

}  // namespace

Runner add_convert(CLI::App& app) {
  auto a = std::make_shared<ConvertArgs>();
  app.add_option("input", a->input,
                 "Checkpoint of the original repository (torch.save'd UNetModel state dict, "
                 "e.g. cd_imagenet64_l2.pt, ema_*.pt)")
      ->required();
  app.add_option("-o,--output", a->output, "Pipeline folder to write")->required();
  app.add_option("--image-size", a->image_size,
                 "Sample size in pixels (required unless the channel multipliers are the "
                 "original's default for 64, 128 or 256)")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--num-head-channels", a->num_head_channels,
                 "Width of one attention head (default 64, or a quarter of the narrowest "
                 "attention layer when less)")
      ->check(CLI::Range(1, 1 << 16));
  app.add_option("--num-train-timesteps", a->options.scheduler.num_train_timesteps,
                 "Scheduler's discretization: 40 for the CD checkpoints, 201 for CT ImageNet-64, "
                 "151 for CT LSUN-256")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  app.add_option("--sigma-min", a->options.scheduler.sigma_min, "Smallest noise level")
      ->capture_default_str();
  app.add_option("--sigma-max", a->options.scheduler.sigma_max, "Largest noise level")
      ->capture_default_str();
  app.add_option("--dtype", a->dtype, "Stored weights: float32 or float16")
      ->capture_default_str()
      ->check(CLI::IsMember({"float32", "float16"}));
  app.add_option("--class-names", a->class_names,
                 "File of class names (one a line, or a JSON list), saved as class_names.json")
      ->check(CLI::ExistingFile);
  app.add_flag("--overwrite", a->options.overwrite, "Replace the output folder if it exists");
  return [a] { return run_convert(*a); };
}

}  // namespace cm::cli
