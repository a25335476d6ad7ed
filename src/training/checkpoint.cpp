#include "training/checkpoint.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <filesystem>

#include "cm/error.h"
#include "cm/pipeline.h"

#include "io/state_dict.h"
#include "training/optimizer_key.h"

namespace cm::training {

namespace fs = std::filesystem;

namespace {

const char* kStateFile = "training_state.safetensors";

void put_module(std::map<std::string, at::Tensor>& out, const std::string& prefix,
                const UNet2DModel& m) {
  for (const auto& [k, v] : m->state_dict()) out.emplace(prefix + k, v);
}

void get_module(const std::map<std::string, at::Tensor>& in, const std::string& prefix,
                UNet2DModel& m, const std::string& source) {
  std::map<std::string, at::Tensor> sub;
  for (const auto& [k, v] : in) {
    if (k.rfind(prefix, 0) == 0) sub.emplace(k.substr(prefix.size()), v);
  }
  m->load_state_dict(sub, source + " [" + prefix + "]");
}

}  // namespace

std::vector<std::pair<std::string, at::Tensor>> TrainState::named_trainable() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& p : online->named_parameters(true)) out.emplace_back(p.key(), p.value());
  if (logvar)
    for (const auto& p : logvar->named_parameters(true))
      out.emplace_back("logvar." + p.key(), p.value());
  return out;
}

std::vector<at::Tensor> TrainState::trainable() const {
  std::vector<at::Tensor> out;
  for (const auto& [name, p] : named_trainable()) out.push_back(p);
  return out;
}

SCMSchedulerConfig scm_scheduler_config(const TrainOptions& options) {
  SCMSchedulerConfig scm;
  scm.sigma_data = options.scheduler.sigma_data;
  scm.sigma_max = options.scheduler.sigma_max;
  return scm;
}

void save_checkpoint(const std::string& output_dir, const TrainOptions& options,
                     const TrainState& state, int64_t num_train_timesteps,
                     const std::vector<std::string>& class_names) {
  const fs::path final_dir = fs::path(output_dir) / "checkpoint";
  const fs::path tmp_dir = fs::path(output_dir) / "checkpoint.tmp";
  const fs::path old_dir = fs::path(output_dir) / "checkpoint.old";
  fs::remove_all(tmp_dir);
  SchedulerConfig sc = options.scheduler;
  sc.num_train_timesteps = static_cast<int>(std::max<int64_t>(2, num_train_timesteps));
  UNet2DModel ema = state.ema;
  if (is_trigflow_method(options.method)) {
    save_pretrained(tmp_dir.string(), ema, scm_scheduler_config(options));
  } else {
    save_pretrained(tmp_dir.string(), ema, sc);
  }
  if (!class_names.empty() && state.online->config().num_class_embeds)
    write_class_names(tmp_dir.string(), class_names);

  std::map<std::string, at::Tensor> t;
  put_module(t, "online.", state.online);
  put_module(t, "ema.", state.ema);
  if (state.target) put_module(t, "target.", state.target);
  if (state.logvar)
    for (const auto& p : state.logvar->named_parameters(true))
      t.emplace("logvar." + p.key(), p.value());
  for (const auto& [name, p] : state.named_trainable()) {
    auto it = state.optimizer->state().find(optimizer_state_key(p));
    if (it == state.optimizer->state().end()) continue;
    const auto& s = static_cast<const torch::optim::AdamParamState&>(*it->second);
    t.emplace("adam.exp_avg." + name, s.exp_avg());
    t.emplace("adam.exp_avg_sq." + name, s.exp_avg_sq());
    t.emplace("adam.step." + name, at::tensor(static_cast<int64_t>(s.step())));
  }
  t.emplace("rng.data", state.generator.get_state());
  t.emplace("rng.default", at::detail::getDefaultCPUGenerator().get_state());
  // Dropout on a GPU draws from that device's generator.
  const auto device = state.online->parameters().front().device();
  if (device.is_cuda())
    t.emplace("rng.cuda", at::globalContext().defaultGenerator(device).get_state());
  write_state_dict((tmp_dir / kStateFile).string(), t,
                   {{"format", "pt"},
                    {"step", std::to_string(state.step)},
                    {"method", options.method},
                    {"optimizer", options.optimizer}});

  fs::remove_all(old_dir);
  if (fs::exists(final_dir)) fs::rename(final_dir, old_dir);
  fs::rename(tmp_dir, final_dir);
  fs::remove_all(old_dir);
}

void load_checkpoint(const std::string& output_dir, const std::string& method, TrainState& state) {
  // save_checkpoint renames checkpoint/ to checkpoint.old/ before the new one takes its place: a
  // process that died between the two renames left the previous checkpoint there.
  std::string path = (fs::path(output_dir) / "checkpoint" / kStateFile).string();
  const std::string old_path = (fs::path(output_dir) / "checkpoint.old" / kStateFile).string();
  if (!fs::exists(path) && fs::exists(old_path)) path = old_path;
  if (!fs::exists(path)) throw Error(path + ": no checkpoint to resume from");
  SafeTensorsFile file(path);
  auto it = file.metadata().find("step");
  if (it == file.metadata().end()) throw Error(path + ": checkpoint has no step");
  const auto saved_method = file.metadata().find("method");
  if (saved_method != file.metadata().end() && saved_method->second != method)
    throw Error("--method " + method + ": the checkpoint in " + output_dir + " was trained with " +
                saved_method->second + " (resume it with --method " + saved_method->second + ")");
  const auto t = read_state_dict(path);
  torch::NoGradGuard no_grad;
  get_module(t, "online.", state.online, path);
  get_module(t, "ema.", state.ema, path);
  if (state.target) get_module(t, "target.", state.target, path);
  if (state.logvar) {
    for (auto& p : state.logvar->named_parameters(true)) {
      const auto it = t.find("logvar." + p.key());
      if (it == t.end()) throw Error(path + ": no logvar." + p.key() + " (not an sCT checkpoint)");
      p.value().copy_(it->second);
    }
  }
  for (const auto& [name, p] : state.named_trainable()) {
    auto avg = t.find("adam.exp_avg." + name);
    if (avg == t.end()) continue;
    auto s = std::make_unique<torch::optim::AdamParamState>();
    const auto device = p.device();
    s->exp_avg(avg->second.to(device, /*non_blocking=*/false, /*copy=*/true));
    s->exp_avg_sq(t.at("adam.exp_avg_sq." + name).to(device, false, true));
    s->step(t.at("adam.step." + name).item<int64_t>());
    state.optimizer->state()[optimizer_state_key(p)] = std::move(s);
  }
  state.generator.set_state(t.at("rng.data"));
  at::Generator default_gen = at::detail::getDefaultCPUGenerator();
  default_gen.set_state(t.at("rng.default"));
  const auto device = state.online->parameters().front().device();
  if (const auto cuda = t.find("rng.cuda"); cuda != t.end() && device.is_cuda()) {
    at::Generator g = at::globalContext().defaultGenerator(device);
    g.set_state(cuda->second);
  }
  state.step = std::stoll(it->second);
}

}  // namespace cm::training
