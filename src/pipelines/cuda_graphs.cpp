#include "pipelines/cuda_graphs.h"

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <sstream>

namespace cm::pipelines {

struct CudaGraphCache::Entry {
  std::mutex mutex;
  at::cuda::CUDAGraph graph;
  c10::optional<c10::cuda::CUDAStream> stream;
  SamplingInputs inputs;  // the graph's own input buffers on the device
  at::Tensor output;      // and its output
};

namespace {

std::string key_of(const SamplingInputs& host, const at::Device& device) {
  std::ostringstream k;
  k << device << '|' << host.noise.sizes() << '|' << host.noise.scalar_type() << '|'
    << host.step_noise.size() << '|' << (host.labels ? "labels" : "none");
  k.precision(17);
  for (const auto& t : host.timesteps) k << '|' << t.item<double>();
  return k.str();
}

void copy_inputs(SamplingInputs& dst, const SamplingInputs& src) {
  dst.noise.copy_(src.noise, /*non_blocking=*/true);
  for (size_t i = 0; i < dst.step_noise.size(); ++i)
    dst.step_noise[i].copy_(src.step_noise[i], /*non_blocking=*/true);
  if (dst.labels) dst.labels->copy_(*src.labels, /*non_blocking=*/true);
}

}  // namespace

CudaGraphCache::CudaGraphCache() = default;
CudaGraphCache::~CudaGraphCache() = default;

size_t CudaGraphCache::size() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

at::Tensor CudaGraphCache::run(UNet2DModelImpl& unet,
                               const CMStochasticIterativeScheduler& scheduler,
                               const SamplingInputs& host, const at::Device& device) {
  const std::string key = key_of(host, device);
  std::shared_ptr<Entry> entry;
  bool fresh = false;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& slot = entries_[key];
    if (!slot) {
      slot = std::make_shared<Entry>();
      fresh = true;
    }
    entry = slot;
  }
  std::lock_guard<std::mutex> lock(entry->mutex);
  const c10::cuda::CUDAGuard device_guard(device);
  if (fresh || !entry->output.defined()) {
    // Capture on a side stream after one eager warm-up there: cuDNN and cuBLAS pick their
    // algorithms and workspaces outside the capture, and the caching allocator has the blocks.
    try {
      entry->stream = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index());
      const c10::cuda::CUDAStreamGuard stream_guard(*entry->stream);
      entry->inputs = to_device(host, device);
      run_sampling_loop(unet, scheduler, entry->inputs);
      entry->stream->synchronize();
      // Thread-local capture: other threads (another GPU's replica) may allocate meanwhile.
      entry->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
      entry->output = run_sampling_loop(unet, scheduler, entry->inputs);
      entry->graph.capture_end();
    } catch (...) {
      std::lock_guard<std::mutex> map_lock(mutex_);
      entries_.erase(key);
      throw;
    }
  }
  const c10::cuda::CUDAStreamGuard stream_guard(*entry->stream);
  copy_inputs(entry->inputs, host);
  entry->graph.replay();
  auto out = at::empty(entry->output.sizes(),
                       entry->output.options().device(at::kCPU).pinned_memory(true));
  out.copy_(entry->output, /*non_blocking=*/true);
  entry->stream->synchronize();
  return out;
}

}  // namespace cm::pipelines
