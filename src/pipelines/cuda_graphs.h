// CUDA graphs of whole sampling loops (CUDA builds only): each (device, batch, timesteps, dtype,
// conditioning) is captured once and replayed, as torch.compile(mode="reduce-overhead") does for
// diffusers. The kernels are those of eager execution, so a replay's numbers are eager's.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "pipelines/sampling_loop.h"

namespace cm::pipelines {

class CudaGraphCache {
 public:
  CudaGraphCache();
  ~CudaGraphCache();

  // The final sample of the loop for `host` inputs (pinned CPU tensors; time inputs on the CPU),
  // as a CPU tensor. Captures on first use of a key; replays of one graph are serialised (their
  // input and output buffers are the graph's own), different graphs run concurrently.
  at::Tensor run(UNet2DModelImpl& unet, const CMStochasticIterativeScheduler& scheduler,
                 const SamplingInputs& host, const at::Device& device);
  size_t size() const;

 private:
  struct Entry;
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<Entry>> entries_;
};

}  // namespace cm::pipelines
