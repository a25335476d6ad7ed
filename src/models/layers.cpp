#include "models/layers.h"

#include <ATen/Parallel.h>
#include <cmath>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <torch/nn/init.h>

#if CM_ONEDNN_DIRECT
#include "kernels/onednn_conv.h"
#endif

namespace cm::models {
namespace {

thread_local bool t_skip_init = false;
thread_local int64_t t_prepack_batch = 0;  // PrepackScope's

// torch::nn's default: kaiming-uniform weights with a = sqrt(5), and a bias uniform in
// ±1/sqrt(fan_in). Same calls in the same order, so a seed gives the same model as before.
void default_init(at::Tensor& weight, at::Tensor& bias) {
  if (t_skip_init) return;
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  const int64_t fan_in = weight.numel() / weight.size(0);
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  torch::nn::init::uniform_(bias, -bound, bound);
}

}  // namespace

void return_freed_heap_pages() {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

SkipInitGuard::SkipInitGuard() : previous_(t_skip_init) { t_skip_init = true; }
SkipInitGuard::~SkipInitGuard() { t_skip_init = previous_; }

namespace {
thread_local bool t_forward_ad = false;
}  // namespace

ForwardAdScope::ForwardAdScope() : previous_(t_forward_ad) { t_forward_ad = true; }
ForwardAdScope::~ForwardAdScope() { t_forward_ad = previous_; }

at::Tensor apply_group_norm(torch::nn::GroupNormImpl& m, const at::Tensor& x) {
  if (!t_forward_ad) return m.forward(x);
  const auto& o = m.options;
  const auto shape = x.sizes().vec();
  const auto grouped = x.reshape({shape[0], o.num_groups(), -1});
  const auto mean = grouped.mean(-1, /*keepdim=*/true);
  const auto centered = grouped - mean;
  const auto var = (centered * centered).mean(-1, /*keepdim=*/true);
  auto y = (centered * (var + o.eps()).rsqrt()).reshape(shape);
  if (o.affine()) {
    std::vector<int64_t> per_channel(shape.size(), 1);
    per_channel[1] = shape[1];
    y = y * m.weight.reshape(per_channel) + m.bias.reshape(per_channel);
  }
  return y;
}

PrepackScope::PrepackScope(int64_t batch) : previous_(t_prepack_batch) {
  t_prepack_batch = batch;
}
PrepackScope::~PrepackScope() {
  t_prepack_batch = previous_;
}

Conv2dImpl::Conv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel, int64_t stride,
                       int64_t padding)
    : out_channels_(out_channels), kernel_(kernel), stride_(stride), padding_(padding) {
  weight = register_parameter("weight", at::empty({out_channels, in_channels, kernel, kernel}));
  bias = register_parameter("bias", at::empty({out_channels}));
  default_init(weight, bias);
}

bool Conv2dImpl::should_prepack(const at::Tensor& x) const {
#if CM_ONEDNN_DIRECT
  const auto type = weight.scalar_type();
  return allow_prepack_ && !cannot_pack_ && !at::GradMode::is_enabled() && weight.device().is_cpu() &&
         (type == at::kFloat || type == at::kBFloat16) && x.scalar_type() == type &&
         x.dim() == 4 && x.numel() > 0 &&
         (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast));
#else
  return false;  // LibTorch's own convolution (CMakeLists.txt: CM_ONEDNN_DIRECT)
#endif
}

at::Tensor Conv2dImpl::forward(const at::Tensor& x) {
#if CM_ONEDNN_DIRECT
  // A forward with gradients is training: it needs the weight as a parameter.
  if (at::GradMode::is_enabled()) {
    unpack();
    return at::conv2d(x, weight, bias, stride_, padding_);
  }
  if (t_prepack_batch > 0 && x.dim() == 4 && x.size(0) == 0) return pack_only(x);
  auto packed = std::atomic_load(&packed_);
  if (!packed && allow_prepack_ && !cannot_pack_) return pack_and_run(x);
  if (packed) {
    const auto input = packed->accepts(x) ? x : x.contiguous();
    if (packed->accepts(input)) return packed->forward(input, bias);
    // Another dtype, say: LibTorch's convolution, on the values the packed copy holds.
    return at::conv2d(x, packed->dense(dense_format_), bias, stride_, padding_);
  }
#endif
  return at::conv2d(x, weight, bias, stride_, padding_);
}

at::Tensor Conv2dImpl::pack_and_run(const at::Tensor& x) {
#if CM_ONEDNN_DIRECT
  // Several threads may run one model (a server): the first gradient-free call packs, under the
  // lock, while the others wait instead of reading the weight it is moving.
  {
    std::lock_guard<std::mutex> lock(*pack_mutex_);
    if (!packed_ && should_prepack(x)) pack_locked(x);
    // Not packed (this input cannot be, or oneDNN declined): run here, where no other thread
    // can move the weight away meanwhile.
    if (!packed_) return at::conv2d(x, weight, bias, stride_, padding_);
  }
  return forward(x);
#else
  return at::conv2d(x, weight, bias, stride_, padding_);
#endif
}

#if CM_ONEDNN_DIRECT
void Conv2dImpl::pack_locked(const at::Tensor& x) {
  dense_format_ = weight.is_contiguous(at::MemoryFormat::ChannelsLast)
                      ? at::MemoryFormat::ChannelsLast
                      : at::MemoryFormat::Contiguous;
  std::shared_ptr<kernels::PackedConv2d> packed;
  try {
    packed = std::make_shared<kernels::PackedConv2d>(weight, stride_, padding_, x, bias, winograd_);
  } catch (const std::exception&) {
    // oneDNN has no kernel for this case on this CPU (bfloat16 without AVX-512, say):
    // LibTorch's convolution handles it, as it does without packing.
    cannot_pack_ = true;
  }
  if (!packed) return;
  torch::NoGradGuard no_grad;
  weight.set_data(at::empty({0}, weight.options()));  // the handle stays, for unpack()
  parameters_["weight"] = at::Tensor();
  std::atomic_store(&packed_, packed);
  // Without this, packing a 1.1 GB model raised its peak resident memory by ~450 MB.
  return_freed_heap_pages();
}

at::Tensor Conv2dImpl::pack_only(const at::Tensor& x) {
  // Activations follow the weight's layout in a forward (the UNet makes its input NHWC for an NHWC
  // model), so the batch packed for does too.
  auto format = dense_format_;
  if (allow_prepack_ && !cannot_pack_) {
    std::lock_guard<std::mutex> lock(*pack_mutex_);
    if (!packed_) {
      format = weight.is_contiguous(at::MemoryFormat::ChannelsLast) ? at::MemoryFormat::ChannelsLast
                                                                    : at::MemoryFormat::Contiguous;
      const auto like = at::empty({t_prepack_batch, x.size(1), x.size(2), x.size(3)},
                                  x.options().memory_format(format));
      if (should_prepack(like)) pack_locked(like);
    }
  }
  const int64_t oh = (x.size(2) + 2 * padding_ - kernel_) / stride_ + 1;
  const int64_t ow = (x.size(3) + 2 * padding_ - kernel_) / stride_ + 1;
  return at::empty({0, out_channels_, oh, ow}, x.options().memory_format(format));
}
#endif

at::Tensor Conv2dImpl::dense_weight() const {
#if CM_ONEDNN_DIRECT
  if (auto packed = std::atomic_load(&packed_)) return packed->dense(dense_format_);
#endif
  return weight;
}

void Conv2dImpl::unpack() {
  if (!is_prepacked()) return;
  std::lock_guard<std::mutex> lock(*pack_mutex_);
  if (!packed_) return;
  torch::NoGradGuard no_grad;
  weight.set_data(dense_weight());
  parameters_["weight"] = weight;
  std::atomic_store(&packed_, std::shared_ptr<kernels::PackedConv2d>());
}

void Conv2dImpl::set_winograd(bool winograd) {
  if (winograd == winograd_) return;
  unpack();
  winograd_ = winograd;
}

void Conv2dImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  unpack();
  Module::to(device, dtype, non_blocking);
}

void Conv2dImpl::to(torch::Dtype dtype, bool non_blocking) {
  unpack();
  Module::to(dtype, non_blocking);
}

void Conv2dImpl::to(torch::Device device, bool non_blocking) {
  unpack();
  Module::to(device, non_blocking);
}

LinearImpl::LinearImpl(int64_t in_features, int64_t out_features) {
  weight = register_parameter("weight", at::empty({out_features, in_features}));
  bias = register_parameter("bias", at::empty({out_features}));
  default_init(weight, bias);
}

at::Tensor LinearImpl::forward(const at::Tensor& x) {
  // One GEMM reaches OpenBLAS on one thread (cm runs it single-threaded, docs/performance.md):
  // without gradients, the rows (tokens) are shared out over the threads instead. Each row's
  // dot products are the same; only which thread computes them changes. The attention blocks'
  // inputs are transposed views, which BLAS reads in place.
  const int64_t threads = at::get_num_threads();
  // bfloat16 GEMMs go to oneDNN, which threads them itself.
  // GPU work stays on the calling thread: its stream (a CUDA graph's capture stream) is per thread.
  if (at::GradMode::is_enabled() || threads < 2 || at::in_parallel_region() || !x.is_cpu() ||
      x.scalar_type() != at::kFloat ||
      (x.dim() != 2 && x.dim() != 3) || x.size(-2) < 64 * threads)
    return at::linear(x, weight, bias);
  const auto x3 = x.dim() == 2 ? x.unsqueeze(0) : x;
  const int64_t rows = x3.size(1);
  auto out = at::empty({x3.size(0), rows, weight.size(0)}, x.options());
  const auto wt = weight.t();
  for (int64_t b = 0; b < x3.size(0); ++b) {
    at::parallel_for(0, rows, (rows + threads - 1) / threads, [&](int64_t begin, int64_t end) {
      auto o = out[b].narrow(0, begin, end - begin);
      at::addmm_out(o, bias, x3[b].narrow(0, begin, end - begin), wt);
    });
  }
  return x.dim() == 2 ? out[0] : out;
}

}  // namespace cm::models
