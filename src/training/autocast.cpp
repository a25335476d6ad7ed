#include "training/autocast.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>
#include <torch/version.h>

#include <mutex>

#include "cm/error.h"

namespace cm::training {

namespace {

#if TORCH_VERSION_MAJOR < 2
at::Tensor to_float(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 ? t.to(at::kFloat) : t;
}

c10::optional<at::Tensor> to_float(const c10::optional<at::Tensor>& t) {
  if (!t || !t->defined()) return t;
  return to_float(*t);
}

at::Tensor group_norm_in_float(const at::Tensor& input, int64_t groups,
                               const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias, double eps,
                               bool cudnn_enabled) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  return at::group_norm(to_float(input), groups, to_float(weight), to_float(bias), eps,
                        cudnn_enabled);
}

bool autocast_enabled(c10::DeviceType device) {
  return device == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
}

void set_autocast(c10::DeviceType device, bool enabled, c10::ScalarType dtype) {
  if (device == c10::DeviceType::CPU) {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  } else {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  }
}

c10::ScalarType autocast_dtype(c10::DeviceType device) {
  return device == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                        : at::autocast::get_autocast_gpu_dtype();
}
#else
bool autocast_enabled(c10::DeviceType device) { return at::autocast::is_autocast_enabled(device); }

void set_autocast(c10::DeviceType device, bool enabled, c10::ScalarType dtype) {
  at::autocast::set_autocast_enabled(device, enabled);
  at::autocast::set_autocast_dtype(device, dtype);
}

c10::ScalarType autocast_dtype(c10::DeviceType device) {
  return at::autocast::get_autocast_dtype(device);
}
#endif

}  // namespace

void install_autocast_policies() {
#if TORCH_VERSION_MAJOR < 2
  static std::once_flag once;
  std::call_once(once, [] {
    // Kept for the life of the process: the dispatcher refers to it.
    static auto* library = new torch::Library(torch::Library::IMPL, "aten",
                                              c10::DispatchKey::AutocastCPU, __FILE__, __LINE__);
    library->impl("group_norm", TORCH_FN(group_norm_in_float));
  });
#endif
}

Bf16Autocast::Bf16Autocast(bool enabled, c10::DeviceType device)
    : enabled_(enabled), device_(device) {
  if (!enabled_) return;
  if (device_ != c10::DeviceType::CPU && device_ != c10::DeviceType::CUDA)
    throw Error(std::string("bfloat16 autocast: unsupported device ") + c10::DeviceTypeName(device));
  install_autocast_policies();
  was_enabled_ = autocast_enabled(device_);
  previous_dtype_ = autocast_dtype(device_);
  set_autocast(device_, true, at::kBFloat16);
}

Bf16Autocast::~Bf16Autocast() {
  if (!enabled_) return;
  set_autocast(device_, was_enabled_, previous_dtype_);
  if (!was_enabled_) at::autocast::clear_cache();
}

}  // namespace cm::training
