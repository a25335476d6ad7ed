// Parsing of diffusers' config.json files. Absent keys take diffusers' defaults; keys starting with
// '_' (class name, version, _use_default_values) and unknown keys are ignored, as diffusers does.
#include "cm/config.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cm/error.h"
#include "io/files.h"

namespace cm {
namespace {

using nlohmann::json;

json parse_object(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw Error(source + ": not valid JSON (" + e.what() + ")");
  }
  if (!j.is_object()) throw Error(source + ": expected a JSON object");
  return j;
}

[[noreturn]] void bad_type(const std::string& source, const std::string& key, const json& v,
                           const char* expected) {
  throw Error(source + ": key '" + key + "' has value " + v.dump() + ", expected " + expected);
}

// Each reader leaves `out` alone when the key is absent (the default stays).
void read(const json& j, const std::string& src, const char* key, int& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_number_integer()) bad_type(src, key, *it, "an integer");
  out = it->get<int>();
}
void read(const json& j, const std::string& src, const char* key, double& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_number()) bad_type(src, key, *it, "a number");
  out = it->get<double>();
}
void read(const json& j, const std::string& src, const char* key, bool& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_boolean()) bad_type(src, key, *it, "true or false");
  out = it->get<bool>();
}
void read(const json& j, const std::string& src, const char* key, std::string& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_string()) bad_type(src, key, *it, "a string");
  out = it->get<std::string>();
}
void read(const json& j, const std::string& src, const char* key, std::optional<int>& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (it->is_null()) {
    out.reset();
    return;
  }
  if (!it->is_number_integer()) bad_type(src, key, *it, "an integer or null");
  out = it->get<int>();
}
void read(const json& j, const std::string& src, const char* key,
          std::optional<std::string>& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (it->is_null()) {
    out.reset();
    return;
  }
  if (!it->is_string()) bad_type(src, key, *it, "a string or null");
  out = it->get<std::string>();
}
void read(const json& j, const std::string& src, const char* key, std::vector<int>& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_array()) bad_type(src, key, *it, "a list of integers");
  out.clear();
  for (const auto& v : *it) {
    if (!v.is_number_integer()) bad_type(src, key, *it, "a list of integers");
    out.push_back(v.get<int>());
  }
}
void read(const json& j, const std::string& src, const char* key, std::vector<std::string>& out) {
  auto it = j.find(key);
  if (it == j.end()) return;
  if (!it->is_array()) bad_type(src, key, *it, "a list of strings");
  out.clear();
  for (const auto& v : *it) {
    if (!v.is_string()) bad_type(src, key, *it, "a list of strings");
    out.push_back(v.get<std::string>());
  }
}

void require_one_of(const std::string& src, const std::string& key, const std::string& value,
                    const std::set<std::string>& allowed) {
  if (allowed.count(value)) return;
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  throw Error(src + ": unsupported " + key + " '" + value + "' (supported: " + list + ")");
}

json optional_to_json(const std::optional<int>& v) { return v ? json(*v) : json(nullptr); }

}  // namespace

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(path + ": read error");
  return ss.str();
}

void write_text_file(const std::string& path, const std::string& text) {
  write_atomically(path, [&](std::FILE* f) { write_bytes(f, path, text.data(), text.size()); });
}

UNetConfig UNetConfig::from_json(const std::string& text, const std::string& src) {
  const json j = parse_object(text, src);
  UNetConfig c;
  if (auto it = j.find("sample_size"); it != j.end() && !it->is_null()) {
    // diffusers also accepts [height, width]; only square samples are generated here.
    if (it->is_array() && it->size() == 2 && (*it)[0].is_number_integer() && (*it)[0] == (*it)[1]) {
      c.sample_size = (*it)[0].get<int>();
    } else if (it->is_number_integer()) {
      c.sample_size = it->get<int>();
    } else {
      bad_type(src, "sample_size", *it, "an integer (or a square [size, size])");
    }
  }
  read(j, src, "in_channels", c.in_channels);
  read(j, src, "out_channels", c.out_channels);
  read(j, src, "center_input_sample", c.center_input_sample);
  read(j, src, "time_embedding_type", c.time_embedding_type);
  read(j, src, "freq_shift", c.freq_shift);
  read(j, src, "flip_sin_to_cos", c.flip_sin_to_cos);
  read(j, src, "down_block_types", c.down_block_types);
  read(j, src, "up_block_types", c.up_block_types);
  read(j, src, "block_out_channels", c.block_out_channels);
  read(j, src, "layers_per_block", c.layers_per_block);
  read(j, src, "mid_block_scale_factor", c.mid_block_scale_factor);
  read(j, src, "downsample_padding", c.downsample_padding);
  read(j, src, "downsample_type", c.downsample_type);
  read(j, src, "upsample_type", c.upsample_type);
  read(j, src, "dropout", c.dropout);
  read(j, src, "act_fn", c.act_fn);
  read(j, src, "attention_head_dim", c.attention_head_dim);
  read(j, src, "norm_num_groups", c.norm_num_groups);
  read(j, src, "attn_norm_num_groups", c.attn_norm_num_groups);
  read(j, src, "norm_eps", c.norm_eps);
  read(j, src, "resnet_time_scale_shift", c.resnet_time_scale_shift);
  read(j, src, "add_attention", c.add_attention);
  read(j, src, "class_embed_type", c.class_embed_type);
  read(j, src, "num_class_embeds", c.num_class_embeds);
  read(j, src, "num_train_timesteps", c.num_train_timesteps);
  c.validate(src);
  return c;
}

UNetConfig UNetConfig::load(const std::string& path) { return from_json(read_text_file(path), path); }

void UNetConfig::validate(const std::string& src) const {
  require_one_of(src, "time_embedding_type", time_embedding_type, {"positional", "fourier"});
  require_one_of(src, "resnet_time_scale_shift", resnet_time_scale_shift,
                 {"default", "scale_shift"});
  require_one_of(src, "act_fn", act_fn, {"silu", "swish"});
  require_one_of(src, "downsample_type", downsample_type, {"conv", "resnet"});
  require_one_of(src, "upsample_type", upsample_type, {"conv", "resnet"});
  if (class_embed_type)
    require_one_of(src, "class_embed_type", *class_embed_type, {"timestep", "identity"});
  for (const auto& t : down_block_types)
    require_one_of(src, "down_block_types entry", t,
                   {"DownBlock2D", "AttnDownBlock2D", "ResnetDownsampleBlock2D"});
  for (const auto& t : up_block_types)
    require_one_of(src, "up_block_types entry", t,
                   {"UpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"});
  auto fail = [&](const std::string& what) { throw Error(src + ": " + what); };
  if (block_out_channels.empty()) fail("block_out_channels is empty");
  if (down_block_types.size() != block_out_channels.size() ||
      up_block_types.size() != block_out_channels.size())
    fail("down_block_types, up_block_types and block_out_channels must have the same length");
  if (!norm_num_groups) fail("norm_num_groups: null is not supported");
  if (*norm_num_groups <= 0) fail("norm_num_groups must be positive");
  for (int ch : block_out_channels) {
    if (ch <= 0) fail("block_out_channels has a non-positive entry " + std::to_string(ch));
    if (ch % *norm_num_groups != 0)
      fail("block_out_channels entry " + std::to_string(ch) + " is not divisible by norm_num_groups " +
           std::to_string(*norm_num_groups));
    if (attention_head_dim && (*attention_head_dim <= 0 || ch % *attention_head_dim != 0) &&
        add_attention)
      fail("block_out_channels entry " + std::to_string(ch) +
           " is not divisible by attention_head_dim " + std::to_string(*attention_head_dim));
  }
  if (in_channels <= 0 || out_channels <= 0) fail("in_channels and out_channels must be positive");
  if (layers_per_block <= 0) fail("layers_per_block must be positive");
  if (sample_size < 0) fail("sample_size must be positive");
  if (num_class_embeds && *num_class_embeds <= 0) fail("num_class_embeds must be positive");
  if (time_embedding_type == "fourier" && class_embed_type && *class_embed_type == "timestep")
    fail("class_embed_type 'timestep' needs time_embedding_type 'positional'");
}

std::string UNetConfig::to_json() const {
  json j;
  j["_class_name"] = "UNet2DModel";
  j["_diffusers_version"] = "0.27.2";
  j["sample_size"] = sample_size;
  j["in_channels"] = in_channels;
  j["out_channels"] = out_channels;
  j["center_input_sample"] = center_input_sample;
  j["time_embedding_type"] = time_embedding_type;
  j["freq_shift"] = freq_shift;
  j["flip_sin_to_cos"] = flip_sin_to_cos;
  j["down_block_types"] = down_block_types;
  j["up_block_types"] = up_block_types;
  j["block_out_channels"] = block_out_channels;
  j["layers_per_block"] = layers_per_block;
  j["mid_block_scale_factor"] = mid_block_scale_factor;
  j["downsample_padding"] = downsample_padding;
  j["downsample_type"] = downsample_type;
  j["upsample_type"] = upsample_type;
  j["dropout"] = dropout;
  j["act_fn"] = act_fn;
  j["attention_head_dim"] = optional_to_json(attention_head_dim);
  j["norm_num_groups"] = optional_to_json(norm_num_groups);
  j["attn_norm_num_groups"] = optional_to_json(attn_norm_num_groups);
  j["norm_eps"] = norm_eps;
  j["resnet_time_scale_shift"] = resnet_time_scale_shift;
  j["add_attention"] = add_attention;
  j["class_embed_type"] = class_embed_type ? json(*class_embed_type) : json(nullptr);
  j["num_class_embeds"] = optional_to_json(num_class_embeds);
  j["num_train_timesteps"] = optional_to_json(num_train_timesteps);
  return j.dump(2) + "\n";
}

SchedulerConfig SchedulerConfig::from_json(const std::string& text, const std::string& src) {
  const json j = parse_object(text, src);
  SchedulerConfig c;
  read(j, src, "num_train_timesteps", c.num_train_timesteps);
  read(j, src, "sigma_min", c.sigma_min);
  read(j, src, "sigma_max", c.sigma_max);
  read(j, src, "sigma_data", c.sigma_data);
  read(j, src, "s_noise", c.s_noise);
  read(j, src, "rho", c.rho);
  read(j, src, "clip_denoised", c.clip_denoised);
  c.validate(src);
  return c;
}

SCMSchedulerConfig SCMSchedulerConfig::from_json(const std::string& text, const std::string& src) {
  const json j = parse_object(text, src);
  SCMSchedulerConfig c;
  read(j, src, "num_train_timesteps", c.num_train_timesteps);
  read(j, src, "prediction_type", c.prediction_type);
  read(j, src, "sigma_data", c.sigma_data);
  read(j, src, "sigma_max", c.sigma_max);
  c.validate(src);
  return c;
}

void SCMSchedulerConfig::validate(const std::string& src) const {
  if (num_train_timesteps < 1)
    throw Error(src + ": num_train_timesteps must be at least 1, got " +
                std::to_string(num_train_timesteps));
  if (prediction_type != "trigflow")
    throw Error(src + ": prediction_type '" + prediction_type +
                "' is not supported (SCMScheduler knows only 'trigflow')");
  if (!(sigma_data > 0) || !(sigma_max > 0) || !std::isfinite(sigma_max))
    throw Error(src + ": sigma_data and sigma_max must be positive and finite");
}

std::string SCMSchedulerConfig::to_json() const {
  json j;
  j["_class_name"] = "SCMScheduler";
  j["_diffusers_version"] = "0.42.1";
  j["num_train_timesteps"] = num_train_timesteps;
  j["prediction_type"] = prediction_type;
  j["sigma_data"] = sigma_data;
  j["sigma_max"] = sigma_max;
  return j.dump(2) + "\n";
}

std::string scheduler_class_name(const std::string& text, const std::string& src) {
  const json j = parse_object(text, src);
  const auto it = j.find("_class_name");
  if (it == j.end()) return "";
  if (!it->is_string()) throw Error(src + ": _class_name must be a string");
  return it->get<std::string>();
}

SchedulerConfig SchedulerConfig::load(const std::string& path) {
  return from_json(read_text_file(path), path);
}

void SchedulerConfig::validate(const std::string& src) const {
  if (num_train_timesteps < 2)
    throw Error(src + ": num_train_timesteps must be at least 2, got " +
                std::to_string(num_train_timesteps));
  if (!(sigma_min > 0) || !(sigma_max > sigma_min))
    throw Error(src + ": need 0 < sigma_min < sigma_max");
  if (!(sigma_data > 0) || !(rho > 0)) throw Error(src + ": sigma_data and rho must be positive");
}

std::string SchedulerConfig::to_json() const {
  json j;
  j["_class_name"] = "CMStochasticIterativeScheduler";
  j["_diffusers_version"] = "0.27.2";
  j["num_train_timesteps"] = num_train_timesteps;
  j["sigma_min"] = sigma_min;
  j["sigma_max"] = sigma_max;
  j["sigma_data"] = sigma_data;
  j["s_noise"] = s_noise;
  j["rho"] = rho;
  j["clip_denoised"] = clip_denoised;
  return j.dump(2) + "\n";
}

std::vector<std::string> read_class_names(const std::string& model_dir) {
  const std::string path = model_dir + "/class_names.json";
  std::ifstream probe(path);
  if (!probe) return {};
  const json j = json::parse(read_text_file(path), nullptr, /*allow_exceptions=*/false);
  if (!j.is_array()) throw Error(path + ": expected a JSON list of class names");
  std::vector<std::string> names;
  for (const auto& v : j) {
    if (!v.is_string()) throw Error(path + ": expected a JSON list of class names");
    names.push_back(v.get<std::string>());
  }
  return names;
}

namespace {
std::string class_key(const std::string& text) {
  std::string key;
  for (unsigned char c : text)
    if (c != ' ' && c != '-' && c != '_') key += static_cast<char>(std::tolower(c));
  return key;
}
}  // namespace

std::optional<int64_t> find_class_name(const std::vector<std::string>& names,
                                       const std::string& text) {
  const std::string key = class_key(text);
  if (key.empty()) return std::nullopt;
  for (size_t i = 0; i < names.size(); ++i)
    if (class_key(names[i]) == key) return static_cast<int64_t>(i);
  return std::nullopt;
}

void write_class_names(const std::string& model_dir, const std::vector<std::string>& names) {
  write_text_file(model_dir + "/class_names.json", json(names).dump(2) + "\n");
}

void PipelineIndex::save(const std::string& dir) const {
  const nlohmann::json index = {{"_class_name", class_name},
                                {"_diffusers_version", "0.27.2"},
                                {"scheduler", {"diffusers", scheduler_class}},
                                {"unet", {"diffusers", unet_class}}};
  write_text_file(dir + "/model_index.json", index.dump(2) + "\n");
}

PipelineIndex PipelineIndex::load(const std::string& path) {
  const json j = parse_object(read_text_file(path), path);
  PipelineIndex p;
  read(j, path, "_class_name", p.class_name);
  require_one_of(path, "_class_name", p.class_name, {"ConsistencyModelPipeline"});
  // Components are ["library", "ClassName"] pairs.
  auto component = [&](const char* key, std::string& out) {
    auto it = j.find(key);
    if (it == j.end()) throw Error(path + ": missing component '" + key + "'");
    if (!it->is_array() || it->size() != 2 || !(*it)[1].is_string())
      bad_type(path, key, *it, "a [library, class] pair");
    out = (*it)[1].get<std::string>();
  };
  component("unet", p.unet_class);
  component("scheduler", p.scheduler_class);
  require_one_of(path, "unet", p.unet_class, {"UNet2DModel"});
  require_one_of(path, "scheduler", p.scheduler_class,
                 {"CMStochasticIterativeScheduler", "SCMScheduler"});
  return p;
}

}  // namespace cm
