#include <ATen/Parallel.h>
#include <atomic>
#include <filesystem>
#include <sstream>

#include "cm/error.h"
#include "cm/unet.h"
#include "io/model_weights.h"
#include "io/state_dict.h"
#include "kernels/norm_act.h"
#include "models/embeddings.h"
#include "models/layers.h"
#include "models/unet_2d_blocks.h"

namespace cm {

using namespace models;

namespace {

struct PendingCopy {
  at::Tensor* target;
  const at::Tensor* source;
  const std::string* name;  // the state-dict key
};

// Each thread takes the next tensor until none is left, copying it single-threaded: a parallel
// copy per tensor meant a fork and join per tensor, and equal shares per thread left one thread
// waiting on the other; either took 3x longer than one thread whenever another process held a
// core.
void copy_all(const std::vector<PendingCopy>& copies,
              const std::function<void(const std::string&)>& on_copied) {
  std::atomic<size_t> next{0};
  at::parallel_for(0, at::get_num_threads(), 1, [&](int64_t, int64_t) {
    torch::NoGradGuard no_grad;
    for (size_t i = next++; i < copies.size(); i = next++) {
      copies[i].target->copy_(*copies[i].source);
      if (on_copied) on_copied(*copies[i].name);
    }
  });
}

}  // namespace

UNet2DModelImpl::UNet2DModelImpl(const UNetConfig& c, WeightInit init) : config_(c) {
  c.validate("UNet2DModel config");
  std::optional<SkipInitGuard> skip;
  if (init == WeightInit::kSkip) skip.emplace();
  const int64_t c0 = c.block_out_channels.front();
  const int64_t temb = c0 * 4;
  const int64_t groups = *c.norm_num_groups;
  const bool scale_shift = c.resnet_time_scale_shift == "scale_shift";
  const size_t levels = c.block_out_channels.size();

  conv_in_ = register_module("conv_in", std::make_shared<Conv2dImpl>(c.in_channels, c0, 3, 1, 1));
  int64_t time_input = c0;
  if (c.time_embedding_type == "fourier") {
    fourier_proj_ = register_module("time_proj", std::make_shared<GaussianFourierProjectionImpl>(c0));
    time_input = 2 * c0;
  }
  time_embedding_ =
      register_module("time_embedding", std::make_shared<TimestepEmbeddingImpl>(time_input, temb));
  if (!c.class_embed_type && c.num_class_embeds) {
    class_embedding_ = register_module(
        "class_embedding", torch::nn::Embedding(*c.num_class_embeds, temb).ptr());
  } else if (c.class_embed_type == "timestep") {
    class_embedding_ = register_module("class_embedding",
                                       std::make_shared<TimestepEmbeddingImpl>(time_input, temb));
  } else if (c.class_embed_type == "identity") {
    class_embedding_ = register_module("class_embedding", torch::nn::Identity().ptr());
  }

  auto head_dim = [&](int64_t channels) -> int64_t {
    return c.attention_head_dim ? *c.attention_head_dim : channels;
  };
  down_blocks_ = register_module("down_blocks", torch::nn::ModuleList());
  int64_t out_ch = c0;
  for (size_t i = 0; i < levels; ++i) {
    BlockOptions o;
    o.type = c.down_block_types[i];
    o.num_layers = c.layers_per_block;
    o.in_channels = out_ch;
    out_ch = c.block_out_channels[i];
    o.out_channels = out_ch;
    o.temb_channels = temb;
    o.add_sample = i + 1 < levels;
    o.eps = c.norm_eps;
    o.groups = groups;
    o.scale_shift = scale_shift;
    o.head_dim = head_dim(out_ch);
    o.downsample_padding = c.downsample_padding;
    o.sample_type = c.downsample_type;
    o.dropout = c.dropout;
    down_blocks_->push_back(DownBlock(o));
  }

  MidBlockOptions m;
  m.channels = c.block_out_channels.back();
  m.temb_channels = temb;
  m.eps = c.norm_eps;
  m.groups = groups;
  if (c.attn_norm_num_groups) m.attn_groups = *c.attn_norm_num_groups;
  m.scale_shift = scale_shift;
  m.add_attention = c.add_attention;
  m.head_dim = head_dim(m.channels);
  m.output_scale_factor = c.mid_block_scale_factor;
  m.dropout = c.dropout;
  mid_block_ = register_module("mid_block", std::make_shared<MidBlockImpl>(m));

  up_blocks_ = register_module("up_blocks", torch::nn::ModuleList());
  std::vector<int64_t> reversed(c.block_out_channels.rbegin(), c.block_out_channels.rend());
  out_ch = reversed[0];
  for (size_t i = 0; i < levels; ++i) {
    BlockOptions o;
    o.type = c.up_block_types[i];
    o.num_layers = c.layers_per_block + 1;
    o.prev_output_channels = out_ch;
    out_ch = reversed[i];
    o.out_channels = out_ch;
    o.in_channels = reversed[std::min(i + 1, levels - 1)];
    o.temb_channels = temb;
    o.add_sample = i + 1 < levels;
    o.eps = c.norm_eps;
    o.groups = groups;
    o.scale_shift = scale_shift;
    o.head_dim = head_dim(out_ch);
    o.sample_type = c.upsample_type;
    o.dropout = c.dropout;
    up_blocks_->push_back(UpBlock(o));
  }

  conv_norm_out_ = register_module(
      "conv_norm_out",
      torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, c0).eps(c.norm_eps)));
  conv_out_ =
      register_module("conv_out", std::make_shared<Conv2dImpl>(c0, c.out_channels, 3, 1, 1));
}

at::Tensor UNet2DModelImpl::forward(const at::Tensor& sample, const at::Tensor& timestep,
                                    const std::optional<at::Tensor>& class_labels,
                                    const ActivationHook& hook) {
  auto record = [&](const char* name, const at::Tensor& t) {
    if (hook) hook(name, t);
  };
  const auto dtype = conv_in_->weight.scalar_type();
  at::Tensor x = config_.center_input_sample ? 2 * sample - 1.0 : sample;
  if (conv_in_->weight.is_contiguous(at::MemoryFormat::ChannelsLast) && x.dim() == 4)
    x = x.contiguous(at::MemoryFormat::ChannelsLast);

  at::Tensor t = timestep.dim() == 0 ? timestep.unsqueeze(0) : timestep;
  t = t.to(x.device()) * at::ones({x.size(0)}, t.options().device(x.device()));
  const int64_t c0 = config_.block_out_channels.front();
  // At least float32 (diffusers' float32 bit for bit), float64 for a float64 model.
  const PositionalProjection positional{c0, config_.flip_sin_to_cos,
                                        static_cast<double>(config_.freq_shift),
                                        at::promote_types(at::kFloat, dtype)};
  at::Tensor t_emb = fourier_proj_ ? fourier_proj_->forward(t) : positional(t);
  at::Tensor emb = time_embedding_->forward(t_emb.to(dtype));
  record("time_embedding", emb);

  if (class_embedding_) {
    if (!class_labels) throw Error("UNet2DModel: class_labels are required by this class-conditional model");
    at::Tensor class_emb;
    if (config_.class_embed_type == "timestep") {
      class_emb = class_embedding_->as<TimestepEmbeddingImpl>()->forward(
          positional(*class_labels).to(dtype));
    } else if (config_.class_embed_type == "identity") {
      class_emb = class_labels->to(dtype);
    } else {
      class_emb = class_embedding_->as<torch::nn::EmbeddingImpl>()->forward(
          class_labels->to(at::kLong));
    }
    record("class_embedding", class_emb);
    emb = emb + class_emb;
  } else if (class_labels) {
    throw Error("UNet2DModel: class_labels given, but this model is not class-conditional");
  }

  at::Tensor h = conv_in_->forward(x);
  record("conv_in", h);
  std::vector<at::Tensor> skips{h};
  for (size_t i = 0; i < down_blocks_->size(); ++i) {
    h = down_blocks_[i]->as<DownBlockImpl>()->forward(h, emb, skips);
    record(("down_blocks." + std::to_string(i)).c_str(), h);
  }
  h = mid_block_->forward(h, emb);
  record("mid_block", h);
  for (size_t i = 0; i < up_blocks_->size(); ++i) {
    h = up_blocks_[i]->as<UpBlockImpl>()->forward(h, emb, skips);
    record(("up_blocks." + std::to_string(i)).c_str(), h);
  }
  const int64_t groups = conv_norm_out_->options.num_groups();
  h = kernels::group_norm_act_supported(h, groups)
          ? kernels::group_norm_act(h, groups, conv_norm_out_->weight, conv_norm_out_->bias,
                                    conv_norm_out_->options.eps(), /*silu=*/true)
          : at::silu(apply_group_norm(*conv_norm_out_, h));
  h = conv_out_->forward(h);
  record("conv_out", h);
  if (fourier_proj_) h = (h / t.reshape({-1, 1, 1, 1})).to(h.scalar_type());
  return h;
}

void UNet2DModelImpl::allow_weight_prepacking(bool allow) {
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = dynamic_cast<Conv2dImpl*>(m.get())) {
      conv->allow_prepack(allow);
      if (!allow) conv->unpack();
    }
  }
}

bool UNet2DModelImpl::prepack_weights(int64_t batch) {
#if CM_ONEDNN_DIRECT
  const auto& w = conv_in_->weight;
  if (batch < 1 || !w.device().is_cpu() || config_.sample_size <= 0) return false;
  torch::NoGradGuard no_grad;  // a forward with gradients unpacks
  PrepackScope scope(batch);
  const auto options = at::TensorOptions().dtype(w.scalar_type());
  const auto sample = at::empty({0, config_.in_channels, config_.sample_size, config_.sample_size},
                                options.memory_format(at::MemoryFormat::ChannelsLast));
  std::optional<at::Tensor> labels;
  if (class_embedding_)
    labels =
        at::empty({0}, config_.class_embed_type == "identity" ? options : options.dtype(at::kLong));
  try {
    forward(sample, at::zeros({0}, at::kFloat), labels);
  } catch (const std::exception&) {
    // An operation that refuses an empty batch: the layers after it pack in the first call, as
    // without this.
    return false;
  }
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = dynamic_cast<Conv2dImpl*>(m.get()); conv && conv->is_prepacked()) return true;
  }
#endif
  (void)batch;
  return false;
}

void UNet2DModelImpl::use_winograd(bool winograd) {
  for (auto& m : modules(/*include_self=*/false))
    if (auto* conv = dynamic_cast<Conv2dImpl*>(m.get())) conv->set_winograd(winograd);
}

void UNet2DModelImpl::unpack_weights() {
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = dynamic_cast<Conv2dImpl*>(m.get())) conv->unpack();
  }
}

void UNet2DModelImpl::to_channels_last() {
  unpack_weights();
  torch::NoGradGuard no_grad;
  for (auto& p : parameters()) {
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
  }
  return_freed_heap_pages();
}

void UNet2DModelImpl::load_state_dict(const std::map<std::string, at::Tensor>& state,
                                      const std::string& source,
                                      const std::function<void(const std::string&)>& on_copied) {
  unpack_weights();  // a prepacked weight has no storage to copy into
  auto params = named_parameters(/*recurse=*/true);
  auto buffers = named_buffers(/*recurse=*/true);
  std::vector<std::string> missing, mismatched, unexpected;
  std::map<std::string, bool> used;
  std::vector<PendingCopy> copies;
  auto lookup = [&](const std::string& name) -> const std::pair<const std::string, at::Tensor>* {
    auto it = state.find(name);
    // GaussianFourierProjection registers its weight twice in diffusers ("weight" and "W").
    if (it == state.end() && name == "time_proj.weight") it = state.find("time_proj.W");
    if (it == state.end()) return nullptr;
    used[it->first] = true;
    return &*it;
  };
  auto assign = [&](const std::string& name, at::Tensor& target) {
    const auto* entry = lookup(name);
    if (!entry) {
      missing.push_back(name);
      return;
    }
    const at::Tensor* src = &entry->second;
    if (src->sizes() != target.sizes()) {
      std::ostringstream ss;
      ss << name << " (file " << src->sizes() << ", model " << target.sizes() << ")";
      mismatched.push_back(ss.str());
      return;
    }
    copies.push_back({&target, src, &entry->first});
  };
  for (auto& p : params) assign(p.key(), p.value());
  for (auto& b : buffers) assign(b.key(), b.value());
  for (const auto& [name, tensor] : state) {
    if (!used.count(name) && name != "time_proj.W") unexpected.push_back(name);
  }
  if (missing.empty() && mismatched.empty() && unexpected.empty()) {
    copy_all(copies, on_copied);
    return;
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
    return s;
  };
  std::string msg = source + ": weights do not match the UNet config:";
  if (!missing.empty()) msg += " missing [" + join(missing) + "];";
  if (!unexpected.empty()) msg += " unexpected [" + join(unexpected) + "];";
  if (!mismatched.empty()) msg += " wrong shape [" + join(mismatched) + "];";
  msg.pop_back();
  throw Error(msg);
}

std::map<std::string, at::Tensor> UNet2DModelImpl::state_dict() const {
  std::map<std::string, at::Tensor> out;
  for (const auto& p : named_parameters(true)) out.emplace(p.key(), p.value().detach());
  for (const auto& b : named_buffers(true)) out.emplace(b.key(), b.value().detach());
  for (const auto& m : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    const auto* conv = dynamic_cast<const Conv2dImpl*>(m.value().get());
    if (conv && conv->is_prepacked()) out[m.key() + ".weight"] = conv->dense_weight();
  }
  return out;
}

UNet2DModel load_unet(const std::string& unet_dir, at::ScalarType dtype, const at::Device& device,
                      const std::string& variant, at::MemoryFormat weight_format) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(unet_dir)) throw Error(unet_dir + ": not a directory");
  const auto config = UNetConfig::load((fs::path(unet_dir) / "config.json").string());
  std::string weights;  // the file named in errors
  const MappedStateDict mapped = map_model_weights(unet_dir, variant, &weights);
  // Every convolution and linear weight is about to be overwritten: drawing random ones first
  // took longer than the copy. Each tensor then goes from the mapping into its final storage in
  // one pass (dtype, device and layout converted on the way) and its mapped pages are dropped, so
  // the file and the model are never resident together.
  UNet2DModel unet(config, WeightInit::kSkip);
  {
    torch::NoGradGuard no_grad;
    for (auto& p : unet->parameters()) {
      const auto format = p.dim() == 4 ? weight_format : at::MemoryFormat::Contiguous;
      p.set_data(at::empty(p.sizes(), p.options().dtype(dtype).device(device), format));
    }
    for (auto& b : unet->buffers()) b.set_data(b.to(device, dtype));
  }
  unet->load_state_dict(mapped.tensors(), weights,
                        [&](const std::string& name) { mapped.release(name); });
  unet->eval();
  return unet;
}

void save_unet(UNet2DModel& unet, const std::string& unet_dir) {
  namespace fs = std::filesystem;
  fs::create_directories(unet_dir);
  write_text_file((fs::path(unet_dir) / "config.json").string(), unet->config().to_json());
  write_state_dict((fs::path(unet_dir) / "diffusion_pytorch_model.safetensors").string(),
                   unet->state_dict());
}

}  // namespace cm
