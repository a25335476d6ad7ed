#include "training/autocast.h"

#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include <mutex>

namespace cm::training {

namespace {

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

}  // namespace

void install_autocast_policies() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Kept for the life of the process: the dispatcher refers to it.
    static auto* library = new torch::Library(torch::Library::IMPL, "aten",
                                              c10::DispatchKey::AutocastCPU, __FILE__, __LINE__);
    library->impl("group_norm", TORCH_FN(group_norm_in_float));
  });
}

Bf16Autocast::Bf16Autocast(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
  install_autocast_policies();
  at::autocast::set_cpu_enabled(true);
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
}

Bf16Autocast::~Bf16Autocast() {
  if (!enabled_) return;
  at::autocast::set_cpu_enabled(false);
  at::autocast::clear_cache();
}

}  // namespace cm::training
