// The diffusers configuration files of a consistency-model pipeline folder, with diffusers' defaults
// for absent keys. Torch-free.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace cm {

// unet/config.json (diffusers.UNet2DModel). Defaults are UNet2DModel.__init__'s.
struct UNetConfig {
  int sample_size = 0;  // diffusers allows null; the pipeline needs a size, so 0 means "absent"
  int in_channels = 3;
  int out_channels = 3;
  bool center_input_sample = false;
  std::string time_embedding_type = "positional";  // positional | fourier
  int freq_shift = 0;
  bool flip_sin_to_cos = true;
  std::vector<std::string> down_block_types = {"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                                               "AttnDownBlock2D"};
  std::vector<std::string> up_block_types = {"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D",
                                             "UpBlock2D"};
  std::vector<int> block_out_channels = {224, 448, 672, 896};
  int layers_per_block = 2;
  double mid_block_scale_factor = 1.0;
  int downsample_padding = 1;
  std::string downsample_type = "conv";  // conv | resnet
  std::string upsample_type = "conv";    // conv | resnet
  double dropout = 0.0;
  std::string act_fn = "silu";
  std::optional<int> attention_head_dim = 8;
  std::optional<int> norm_num_groups = 32;
  std::optional<int> attn_norm_num_groups;
  double norm_eps = 1e-5;
  std::string resnet_time_scale_shift = "default";  // default | scale_shift
  bool add_attention = true;
  std::optional<std::string> class_embed_type;  // none | timestep | identity
  std::optional<int> num_class_embeds;
  std::optional<int> num_train_timesteps;

  // Parses JSON text; `source` names the file in error messages. Unknown or unsupported values
  // are errors naming the key and the value.
  static UNetConfig from_json(const std::string& json_text, const std::string& source);
  static UNetConfig load(const std::string& path);
  std::string to_json() const;
  void validate(const std::string& source) const;
};

// scheduler/scheduler_config.json (diffusers.CMStochasticIterativeScheduler).
struct SchedulerConfig {
  int num_train_timesteps = 40;
  double sigma_min = 0.002;
  double sigma_max = 80.0;
  double sigma_data = 0.5;
  double s_noise = 1.0;
  double rho = 7.0;
  bool clip_denoised = true;

  static SchedulerConfig from_json(const std::string& json_text, const std::string& source);
  static SchedulerConfig load(const std::string& path);
  std::string to_json() const;
  void validate(const std::string& source) const;
};

// scheduler_config.json of diffusers' SCMScheduler (TrigFlow: x_t = cos t·x₀ + sin t·z, z ~
// N(0, σd²), t ∈ [0, π/2]). sigma_max is this project's: the largest EDM noise level σ = σd·tan t
// the network was trained at (the sCM trainer's UNet is an EDM denoiser); times beyond atan(σmax/σd)
// are evaluated there. diffusers ignores the key.
struct SCMSchedulerConfig {
  int num_train_timesteps = 1000;
  std::string prediction_type = "trigflow";
  double sigma_data = 0.5;
  double sigma_max = 80.0;

  static SCMSchedulerConfig from_json(const std::string& json_text, const std::string& source);
  std::string to_json() const;
  void validate(const std::string& source) const;
};

// The "_class_name" of a scheduler_config.json ("" when absent), for choosing the scheduler.
std::string scheduler_class_name(const std::string& json_text, const std::string& source);

// model_index.json: which classes make up the pipeline.
struct PipelineIndex {
  std::string class_name = "ConsistencyModelPipeline";
  std::string unet_class = "UNet2DModel";
  std::string scheduler_class = "CMStochasticIterativeScheduler";

  static PipelineIndex load(const std::string& path);
  // Writes <dir>/model_index.json as diffusers writes it for ConsistencyModelPipeline.
  void save(const std::string& dir) const;
};

// Optional class_names.json of a model folder: a JSON list, index = class label. Empty when the
// folder has none. (Not a diffusers file; diffusers ignores it.)
std::vector<std::string> read_class_names(const std::string& model_dir);
void write_class_names(const std::string& model_dir, const std::vector<std::string>& names);
// The label of a class given by name as people write it: case, spaces, '-' and '_' ignored
// ("T-Shirt" and "tshirt" alike). Nothing when no name matches.
std::optional<int64_t> find_class_name(const std::vector<std::string>& names,
                                       const std::string& text);

// Reads a whole file into a string; cm::Error naming the path when it can't.
std::string read_text_file(const std::string& path);
// Writes via a temporary file and a rename.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace cm
