// Training checkpoints: a diffusers pipeline folder of the EMA weights plus the full training
// state (online, target and EMA weights, Adam moments, step, generator states), written to a
// temporary folder and renamed into place.
#pragma once

#include <torch/nn/modules/linear.h>
#include <torch/optim/adam.h>
#include <optional>
#include <string>

#include "cm/training.h"
#include "cm/unet.h"

namespace cm::training {

struct TrainState {
  UNet2DModel online{nullptr};
  UNet2DModel ema{nullptr};
  UNet2DModel target{nullptr};                         // CT / CD only
  torch::nn::Linear logvar{nullptr};                   // sCT: the adaptive weighting's head
  std::unique_ptr<torch::optim::Optimizer> optimizer;  // Adam or RAdam: both keep AdamParamState
  at::Generator generator;                             // data order and noise
  int64_t step = 0;

  // What the optimizer updates, by name: the online UNet's parameters, then the head's as
  // "logvar.weight" and "logvar.bias".
  std::vector<std::pair<std::string, at::Tensor>> named_trainable() const;
  std::vector<at::Tensor> trainable() const;
};

// The SCMScheduler an sCT run's pipeline is saved and sampled with: the run's σd and σmax.
SCMSchedulerConfig scm_scheduler_config(const TrainOptions& options);

// Writes <dir>/checkpoint (replacing the previous one only once the new one is complete).
void save_checkpoint(const std::string& output_dir, const TrainOptions& options,
                     const TrainState& state, int64_t num_train_timesteps,
                     const std::vector<std::string>& class_names);
// Restores everything save_checkpoint wrote (from checkpoint.old/ when a save was interrupted);
// the state's modules must have the same config, and the checkpoint the same method.
void load_checkpoint(const std::string& output_dir, const std::string& method, TrainState& state);

}  // namespace cm::training
